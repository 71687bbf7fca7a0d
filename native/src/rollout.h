// AddonRolloutContext: the JS object over a RolloutContextState (rollout_core.h) and its async
// workers (generate, score), plus the readers of JS inputs shared with the policy binding.
#pragma once

#include <napi.h>

#include "model.h"
#include "rollout_core.h"

#include <memory>
#include <vector>

namespace visplay {

// createContext(options) on a model -> Promise<AddonRolloutContext>
Napi::Value create_rollout_context(Napi::Env env, std::shared_ptr<ModelState> model, const Napi::Object & options,
                                   const Napi::Object & model_object);
Napi::Function define_rollout_context(Napi::Env env);

std::vector<llama_token> read_tokens(Napi::Env env, const Napi::Value & v, int32_t n_vocab);
// [{ key, width, height, rgb }] from JS; throws a JS error on malformed input.
std::vector<ImageInput> read_images(Napi::Env env, const Napi::Value & v);

}  // namespace visplay
