// visplay-native's library API: everything the CLI uses, for programs that drive VisPlay themselves.
export { Model, type LoadModelOptions, type ModelInfo, type RenderOptions } from './model.js';
export {
  RolloutEngine, type GenerateOptions, type ImageInput, type RolloutOptions, type RolloutRequest, type RolloutResult,
  type RolloutStats, type Sample,
} from './rollout.js';
export {
  LORA_MODULES, Policy, groupsFromRollout, type EvaluateResult, type LoraModule, type LossOptions, type OptimizerOptions, type PolicyOptions,
  type StepResult, type TrainGroup, type TrainSample,
} from './policy.js';
export { BatchImages, type PromptSpec } from './prompts.js';
export { groupAdvantages } from './advantages.js';
export { QUANTIZATION_TYPES, quantizeModel, type QuantizationType } from './quantize.js';
export { TINY_MODEL_CONFIG, cacheDir, loadTinyModel, makeTinyModel, type MakeTinyModelOptions, type TinyModelFiles } from './tiny-model.js';
export { ImageCache, loadImage, type DecodedImage, type LoadImageOptions } from './images.js';
export {
  CHAT_FORMATS, QWEN25VL_CHAT_TEMPLATE, detectChatFamily, renderWith, splitThinking, userTurn,
  type ChatFamily, type ChatMessage, type ChatPart, type ChatRole,
} from './chat.js';
export { VisplayError, isVisplayError, type VisplayErrorCode } from './errors.js';
export { inspectModelPair, readGguf, type GgufFile } from './gguf.js';
export { loadBinding, type FinishReason } from './native.js';
