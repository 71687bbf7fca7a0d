// groupAdvantages for JS over group_advantages_cpu (see kernels_binding.h for the contract).
//
// Rules, the same as src/advantages.ts checks first (this is the backstop for direct callers):
//   rewards     a Float32Array of finite numbers
//   groupSizes  an Int32Array of integers >= 1 summing to rewards.length (CSR offsets are built here)
//   eps         a finite number >= 0
// An empty rewards array with an empty groupSizes array is valid and returns an empty Float32Array.
#include "kernels_binding.h"

#include "../src/common.h"
#include "grpo_kernels.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace visplay {
namespace {

constexpr const char * kInvalid = "ERR_INVALID_ARG";

// A number as JS would print it (NaN, Infinity), for messages.
std::string js_number(double x) {
    if (std::isnan(x)) return "NaN";
    if (std::isinf(x)) return x > 0 ? "Infinity" : "-Infinity";
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.9g", x);
    return buf;
}

std::string describe(const Napi::Value & v) {
    switch (v.Type()) {
        case napi_undefined: return "undefined";
        case napi_null: return "null";
        case napi_boolean: return "a boolean";
        case napi_number: return "a number";
        case napi_string: return "a string";
        case napi_function: return "a function";
        default: break;
    }
    if (v.IsTypedArray()) {
        switch (v.As<Napi::TypedArray>().TypedArrayType()) {
            case napi_float32_array: return "a Float32Array";
            case napi_float64_array: return "a Float64Array";
            case napi_int32_array: return "an Int32Array";
            default: return "another typed array";
        }
    }
    if (v.IsArray()) return "an Array";
    return "an object";
}

Napi::Value group_advantages_js(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    const Napi::Value rv = info[0], sv = info[1], ev = info[2];
    if (!rv.IsTypedArray() || rv.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
        throw_js(env, kInvalid, "Expected Float32Array for rewards but received " + describe(rv));
    }
    if (!sv.IsTypedArray() || sv.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
        throw_js(env, kInvalid, "Expected Int32Array for groupSizes but received " + describe(sv));
    }
    if (!ev.IsNumber()) throw_js(env, kInvalid, "Expected non-negative number for eps but received " + describe(ev));
    const double eps = ev.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(eps) || eps < 0.0) {
        throw_js(env, kInvalid, "Expected non-negative number for eps but received " + js_number(eps));
    }

    Napi::Float32Array rewards = rv.As<Napi::Float32Array>();
    Napi::Int32Array sizes = sv.As<Napi::Int32Array>();
    const size_t n = rewards.ElementLength();
    const size_t n_groups = sizes.ElementLength();
    // CSR offsets are int32 and n_groups an int: both bounded by INT32_MAX.
    if (n > static_cast<size_t>(std::numeric_limits<int32_t>::max()) || n_groups >= static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
        throw_js(env, kInvalid, "groupAdvantages takes at most 2147483647 rewards and groups");
    }
    const float * r = rewards.Data();
    for (size_t i = 0; i < n; ++i) {
        if (!std::isfinite(r[i])) {
            throw_js(env, kInvalid, "Expected finite number for rewards[" + std::to_string(i) + "] but received " + js_number(r[i]));
        }
    }
    std::vector<int32_t> offsets(n_groups + 1, 0);
    const int32_t * s = sizes.Data();
    int64_t total = 0;
    for (size_t g = 0; g < n_groups; ++g) {
        if (s[g] < 1) {
            throw_js(env, kInvalid, "Expected positive integer for groupSizes[" + std::to_string(g) + "] but received " + std::to_string(s[g]));
        }
        total += s[g];  // int64: at most 2^31 sizes of at most 2^31 each
        if (total <= static_cast<int64_t>(n)) offsets[g + 1] = static_cast<int32_t>(total);
    }
    if (total != static_cast<int64_t>(n)) {
        throw_js(env, kInvalid, "Expected groupSizes summing to rewards.length (" + std::to_string(n) + ") but they sum to " + std::to_string(total));
    }

    Napi::Float32Array out = Napi::Float32Array::New(env, n);
    try {
        group_advantages_cpu(r, offsets.data(), static_cast<int>(n_groups), static_cast<float>(eps), out.Data());
    } catch (const std::invalid_argument & e) {
        throw_js(env, kInvalid, e.what());
    }
    return out;
}

}  // namespace

void init_kernels(Napi::Env env, Napi::Object exports) {
    exports.Set("groupAdvantages", Napi::Function::New(env, group_advantages_js, "groupAdvantages"));
}

}  // namespace visplay
