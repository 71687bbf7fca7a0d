// The GGUF API in one import: the header reader, typed metadata access, and the model-pair checks.
export * from './gguf-reader.js';
export * from './gguf-metadata.js';
export * from './model-pair.js';
