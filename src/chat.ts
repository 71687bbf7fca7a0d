// Chat templates of the model families we target, rendered in TypeScript exactly as the models'
// Jinja templates render them, with each image part written as the projector's marker (mtmd puts
// <|vision_start|>/<|vision_end|> around the image itself). Families without an entry fall back
// to llama.cpp's llama_chat_apply_template through the binding.
//
// Why not always use llama.cpp's templating: llama_chat_apply_template does not run Jinja; it
// recognizes template families by substrings and renders generic ChatML, which drops Qwen2.5-VL's
// default system prompt. A prompt the model was not trained on shifts every rollout's distribution.

export type ChatRole = 'system' | 'user' | 'assistant';

export type ChatPart = { type: 'text'; text: string } | { type: 'image' };

export interface ChatMessage {
  role: ChatRole;
  content: string | ChatPart[];
}

/** 'native': no registry entry; render with the GGUF's own template through the binding. */
export type ChatFamily = 'qwen2.5-vl' | 'mimo-vl' | 'native';

export interface RenderOptions {
  /** What stands for one image in the prompt (the binding's `projector.marker`). */
  marker: string;
  /** Append the opening of the assistant's turn. */
  addGenerationPrompt: boolean;
}

export interface ThinkingMarkers {
  open: string;
  close: string;
}

export interface ChatFormat {
  family: Exclude<ChatFamily, 'native'>;
  /** Markers around the reasoning that precedes the answer in assistant turns; null if none. */
  thinking: ThinkingMarkers | null;
  render(messages: readonly ChatMessage[], options: RenderOptions): string;
}

/** llama_chat_apply_template through the binding: (messages, addAssistant) -> prompt. */
export type NativeChatApply = (messages: Array<{ role: string; content: string }>, addAssistant: boolean) => string;

// ---- the templates ------------------------------------------------------------------------------

/**
 * Qwen2.5-VL-*-Instruct's chat template (chat_template.json), verbatim. Written into the tiny
 * model's GGUF so it looks like the real models to every tool that reads templates.
 */
export const QWEN25VL_CHAT_TEMPLATE =
  "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}" +
  "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}" +
  "<|im_start|>{{ message['role'] }}\n" +
  "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n" +
  "{% else %}{% for content in message['content'] %}" +
  "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}" +
  "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}" +
  '<|vision_start|><|image_pad|><|vision_end|>' +
  "{% elif content['type'] == 'video' or 'video' in content %}" +
  "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}" +
  '<|vision_start|><|video_pad|><|vision_end|>' +
  "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n" +
  '{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}';

export const QWEN25VL_DEFAULT_SYSTEM_PROMPT = 'You are a helpful assistant.';

/** From MiMo-VL's template (llama.cpp keeps a copy: models/templates/MiMo-VL.jinja). */
export const MIMO_VL_DEFAULT_SYSTEM_PROMPT = 'You are MiMo, an AI assistant developed by Xiaomi.';

/**
 * Both families render ChatML: a default system turn when the conversation does not open with one,
 * then `<|im_start|>{role}\n{content}<|im_end|>\n` per message, then `<|im_start|>assistant\n`.
 * Earlier assistant turns are kept verbatim (MiMo-VL's template does not strip their reasoning).
 */
function chatml(defaultSystemPrompt: string) {
  return (messages: readonly ChatMessage[], { marker, addGenerationPrompt }: RenderOptions): string => {
    let out = '';
    if (messages[0]?.role !== 'system') out += turn('system', defaultSystemPrompt);
    for (const message of messages) out += turn(message.role, flatten(message.content, marker));
    if (addGenerationPrompt) out += '<|im_start|>assistant\n';
    return out;
  };
}

function turn(role: string, content: string): string {
  return `<|im_start|>${role}\n${content}<|im_end|>\n`;
}

/** Text parts verbatim, each image part as the marker, concatenated as the templates do. */
function flatten(content: string | readonly ChatPart[], marker: string): string {
  if (typeof content === 'string') return content;
  return content.map((part) => (part.type === 'image' ? marker : part.text)).join('');
}

export const CHAT_FORMATS: Readonly<Record<Exclude<ChatFamily, 'native'>, ChatFormat>> = {
  'qwen2.5-vl': { family: 'qwen2.5-vl', thinking: null, render: chatml(QWEN25VL_DEFAULT_SYSTEM_PROMPT) },
  'mimo-vl': { family: 'mimo-vl', thinking: { open: '<think>', close: '</think>' }, render: chatml(MIMO_VL_DEFAULT_SYSTEM_PROMPT) },
};

// ---- choosing and rendering ---------------------------------------------------------------------

export interface ChatModelInfo {
  /** general.architecture ("qwen2vl" for Qwen2-VL, Qwen2.5-VL and MiMo-VL alike). */
  architecture: string;
  /** general.name */
  name: string;
  /** tokenizer.chat_template, or null. */
  chatTemplate: string | null;
}

/**
 * MiMo-VL shares Qwen2.5-VL's architecture, so it is told apart by name or template first. Other
 * qwen2vl models (Qwen2-VL, Qwen2.5-VL, the tiny model) use Qwen2.5-VL's template; anything else
 * renders through the binding.
 */
export function detectChatFamily(info: ChatModelInfo): ChatFamily {
  if (/mimo/i.test(info.name) || (info.chatTemplate?.includes('MiMo') ?? false)) return 'mimo-vl';
  if (info.architecture === 'qwen2vl' || /qwen2(\.5)?[-_ ]?vl/i.test(info.name)) return 'qwen2.5-vl';
  return 'native';
}

/** Renders `messages` with the registry entry of `family`, or through `nativeApply` for 'native'. */
export function renderWith(
  family: ChatFamily,
  messages: readonly ChatMessage[],
  options: RenderOptions,
  nativeApply: NativeChatApply,
): string {
  if (family !== 'native') return CHAT_FORMATS[family].render(messages, options);
  const flat = messages.map((m) => ({ role: m.role, content: flatten(m.content, options.marker) }));
  return nativeApply(flat, options.addGenerationPrompt);
}

/** A user turn with `imageCount` images followed by the text (Qwen-VL's convention: images first). */
export function userTurn(text: string, imageCount = 0): ChatMessage {
  const images: ChatPart[] = Array.from({ length: imageCount }, () => ({ type: 'image' }));
  return { role: 'user', content: [...images, { type: 'text', text }] };
}

export interface SplitThinking {
  /** The reasoning between the markers (trimmed); null when the text has none. */
  thinking: string | null;
  /** The rest of the text (trimmed). */
  answer: string;
}

/**
 * Separates reasoning from answer in a reasoning model's output. Handles the shapes sampling
 * produces: `<think>r</think>a`; `r</think>a` (the opening marker was part of the prompt); and
 * `<think>r...` cut off by the token limit before the closing marker (all reasoning, no answer).
 */
export function splitThinking(text: string, markers: ThinkingMarkers = { open: '<think>', close: '</think>' }): SplitThinking {
  const start = text.indexOf(markers.open);
  const opened = start !== -1;
  const reasoningStart = opened ? start + markers.open.length : 0;
  const before = opened ? text.slice(0, start) : '';
  const end = text.indexOf(markers.close, reasoningStart);
  if (end !== -1) {
    return {
      thinking: text.slice(reasoningStart, end).trim(),
      answer: (before + text.slice(end + markers.close.length)).trim(),
    };
  }
  if (opened) return { thinking: text.slice(reasoningStart).trim(), answer: before.trim() };
  return { thinking: null, answer: text.trim() };
}
