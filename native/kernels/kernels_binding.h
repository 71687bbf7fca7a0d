// The JS face of the GRPO kernels (native/kernels/grpo_kernels.h). Compiled into the addon target,
// not into visplay_kernels, so the kernels library and its test and benchmark need no Node headers.
#pragma once

#include <napi.h>

namespace visplay {

// Adds to `exports`:
//   groupAdvantages(rewards: Float32Array, groupSizes: Int32Array, eps: number): Float32Array
// Synchronous (it is O(n) and GRPO batches are thousands of rewards, well under a millisecond).
// Bad input throws an Error whose message starts with "[ERR_INVALID_ARG] " (src/errors.ts turns it
// into a VisplayError); src/advantages.ts validates first with the same rules.
void init_kernels(Napi::Env env, Napi::Object exports);

}  // namespace visplay
