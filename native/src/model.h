// AddonModel: the JS object over a ModelState (model_core.h), async load, metadata, tokenizer.
#pragma once

#include <napi.h>

#include "model_core.h"

#include <memory>

namespace visplay {

class AddonModel : public Napi::ObjectWrap<AddonModel> {
  public:
    static Napi::Function define(Napi::Env env);
    static Napi::Object create(Napi::Env env, std::shared_ptr<ModelState> state);
    explicit AddonModel(const Napi::CallbackInfo & info);
    ~AddonModel() override;

    // Throws ERR_DISPOSED when disposed.
    std::shared_ptr<ModelState> state(Napi::Env env) const;

  private:
    Napi::Value info(const Napi::CallbackInfo & info);
    Napi::Value tokenize(const Napi::CallbackInfo & info);
    Napi::Value detokenize(const Napi::CallbackInfo & info);
    Napi::Value measure_prompt(const Napi::CallbackInfo & info);
    Napi::Value apply_chat_template(const Napi::CallbackInfo & info);
    Napi::Value create_context(const Napi::CallbackInfo & info);
    Napi::Value create_policy(const Napi::CallbackInfo & info);
    Napi::Value dispose(const Napi::CallbackInfo & info);
    Napi::Value disposed(const Napi::CallbackInfo & info);

    std::shared_ptr<ModelState> state_;
};

// loadModel(options) -> Promise<AddonModel>
Napi::Value load_model(const Napi::CallbackInfo & info);

}  // namespace visplay
