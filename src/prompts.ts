// Turning prompt specs (chat messages or a templated prompt, plus images) into what the native
// engines take: a templated prompt string with one image marker per image, and the batch's
// distinct decoded images. Shared by the rollout engine and the trainer, so both see the exact
// same prompt for the same request.
import type { ChatMessage, ChatPart } from './chat.js';
import { VisplayError } from './errors.js';
import { ImageCache, type DecodedImage } from './images.js';
import type { Model } from './model.js';
import type { NativeImage } from './native.js';
import * as check from './validate.js';

/** A file path, encoded bytes (JPEG, PNG, ...), or an image already decoded by loadImage(). */
export type ImageInput = string | Buffer | Uint8Array | DecodedImage;

export interface PromptSpec {
  /** The conversation; rendered with the model's chat template (see chat.ts). */
  messages?: ChatMessage[];
  /**
   * Instead of messages: an already templated prompt, one image marker (model.info.projector.marker)
   * per image. For tools that must reproduce another program's exact prompt.
   */
  prompt?: string;
  /**
   * Images of the conversation, in the order of its image parts. When no message has an image
   * part, they are put before the text of the last user message (Qwen-VL's convention).
   */
  images?: ImageInput[];
}

/** The distinct images of one native call, by content hash, and each request's indices into them. */
export class BatchImages {
  readonly images: NativeImage[] = [];
  readonly #indexByKey = new Map<string, number>();
  readonly #decodedBySource = new Map<ImageInput, DecodedImage>();
  readonly #cache: ImageCache;
  readonly #maxPixels: number | undefined;

  constructor(cache: ImageCache, maxPixels?: number) {
    this.#cache = cache;
    this.#maxPixels = maxPixels;
  }

  /** Decodes (once per source) and deduplicates `inputs`; returns their indices into `images`. */
  async add(inputs: unknown, at: string): Promise<number[]> {
    const list = inputs ?? [];
    if (!Array.isArray(list)) throw new VisplayError('ERR_INVALID_ARG', `Expected array for ${at}.images but received ${typeof list}`);
    const indices: number[] = [];
    for (const input of list as ImageInput[]) {
      let decoded = this.#decodedBySource.get(input);
      if (!decoded) {
        decoded = isDecoded(input) ? input : await this.#cache.load(input, { maxPixels: this.#maxPixels });
        this.#decodedBySource.set(input, decoded);
      }
      let index = this.#indexByKey.get(decoded.key);
      if (index === undefined) {
        index = this.images.length;
        this.#indexByKey.set(decoded.key, index);
        this.images.push({ key: decoded.key, width: decoded.width, height: decoded.height, rgb: decoded.rgb });
      }
      indices.push(index);
    }
    return indices;
  }
}

/** The templated prompt of `spec` (which has `imageCount` images), checked against its markers. */
export function renderPrompt(model: Model, spec: PromptSpec, imageCount: number, at: string): string {
  if (spec.prompt !== undefined) {
    if (spec.messages !== undefined) throw new VisplayError('ERR_INVALID_ARG', `${at}: give messages or prompt, not both`);
    const prompt = check.string(`${at}.prompt`, spec.prompt);
    const markers = prompt.split(model.info.projector.marker).length - 1;
    if (markers !== imageCount) {
      throw new VisplayError('ERR_INVALID_ARG', `${at}: the prompt has ${markers} image markers but ${imageCount} images were given`);
    }
    return prompt;
  }
  const messages = placeImages(check.arrayOf(`${at}.messages`, spec.messages, checkMessage), imageCount, at);
  return model.renderChat(messages);
}

/** Prepares one spec: its images into `batch`, its prompt rendered. */
export async function preparePrompt(model: Model, batch: BatchImages, spec: PromptSpec, at: string): Promise<{ prompt: string; images: number[] }> {
  if (typeof spec !== 'object' || spec === null) {
    throw new VisplayError('ERR_INVALID_ARG', `Expected object for ${at} but received ${spec === null ? 'null' : typeof spec}`);
  }
  const images = await batch.add(spec.images, at);
  return { prompt: renderPrompt(model, spec, images.length, at), images };
}

function isDecoded(input: ImageInput): input is DecodedImage {
  return typeof input === 'object' && !Buffer.isBuffer(input) && !(input instanceof Uint8Array) && 'rgb' in input;
}

function checkMessage(name: string, value: unknown): ChatMessage {
  if (typeof value !== 'object' || value === null) throw new VisplayError('ERR_INVALID_ARG', `Expected object for ${name} but received ${value === null ? 'null' : typeof value}`);
  const m = value as ChatMessage;
  check.oneOf(`${name}.role`, m.role, ['system', 'user', 'assistant'] as const);
  if (typeof m.content !== 'string' && !Array.isArray(m.content)) {
    throw new VisplayError('ERR_INVALID_ARG', `Expected string or array for ${name}.content but received ${typeof m.content}`);
  }
  return m;
}

function countImageParts(messages: ChatMessage[]): number {
  let n = 0;
  for (const m of messages) if (Array.isArray(m.content)) n += m.content.filter((p) => p.type === 'image').length;
  return n;
}

/** Matches image parts to images: explicit parts must match in number; else images lead the last user turn. */
function placeImages(messages: ChatMessage[], imageCount: number, at: string): ChatMessage[] {
  const parts = countImageParts(messages);
  if (parts > 0 || imageCount === 0) {
    if (parts !== imageCount) {
      throw new VisplayError('ERR_INVALID_ARG', `${at}: the messages have ${parts} image parts but ${imageCount} images were given`);
    }
    return messages;
  }
  let last = -1;
  messages.forEach((m, i) => { if (m.role === 'user') last = i; });
  if (last < 0) throw new VisplayError('ERR_INVALID_ARG', `${at}: images need a user message to go in`);
  const target = messages[last]!;
  const text: ChatPart[] = typeof target.content === 'string' ? [{ type: 'text', text: target.content }] : target.content;
  const content: ChatPart[] = [...Array.from({ length: imageCount }, () => ({ type: 'image' as const })), ...text];
  return messages.map((m, i) => (i === last ? { ...m, content } : m));
}
