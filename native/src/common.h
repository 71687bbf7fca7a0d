// The addon's N-API plumbing over core_common.h: JS errors with codes, per-environment data.
// Sources of the Node-free core (visplay_core) that include this header are compiled with
// VISPLAY_NODE_FREE and see core_common.h's part only.
#pragma once

#include "core_common.h"

#ifndef VISPLAY_NODE_FREE

#include <napi.h>

#include <string>

namespace visplay {

[[noreturn]] inline void throw_js(Napi::Env env, const std::string & code, const std::string & message) {
    throw Napi::Error::New(env, coded_message(code, message));
}

// Per-environment data: the addon is context-aware (main thread and worker threads each get their
// own constructors), so nothing JS-related lives in globals.
struct AddonData {
    Napi::FunctionReference model_constructor;
    Napi::FunctionReference context_constructor;
    Napi::FunctionReference policy_constructor;
};

inline AddonData & addon_data(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

}  // namespace visplay

#endif  // VISPLAY_NODE_FREE
