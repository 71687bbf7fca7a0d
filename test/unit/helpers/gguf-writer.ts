// Writes small GGUF files for tests: well-formed ones from a description, and the raw building
// blocks (ByteWriter) to hand-craft malformed ones.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ggmlTypeByName } from '../../../src/ggml-types.js';

/** GGUF value type ids. */
export const T = { u8: 0, i8: 1, u16: 2, i16: 3, u32: 4, i32: 5, f32: 6, bool: 7, string: 8, array: 9, u64: 10, i64: 11, f64: 12 } as const;
export type ScalarType = Exclude<keyof typeof T, 'array'>;

export type KvValue =
  | { type: ScalarType; value: number | bigint | boolean | string }
  | { type: 'array'; elementType: ScalarType; values: Array<number | bigint | boolean | string> };

export interface TensorSpec {
  name: string;
  dims: number[];
  /** ggml type name (default F32). */
  type?: string;
  /** Override the computed offset. */
  offset?: bigint;
}

export class ByteWriter {
  private readonly parts: Buffer[] = [];

  get length(): number {
    return this.parts.reduce((n, p) => n + p.length, 0);
  }

  raw(bytes: Buffer | string): this {
    this.parts.push(typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes);
    return this;
  }

  u8(v: number): this { const b = Buffer.alloc(1); b.writeUInt8(v); return this.raw(b); }
  i8(v: number): this { const b = Buffer.alloc(1); b.writeInt8(v); return this.raw(b); }
  u16(v: number): this { const b = Buffer.alloc(2); b.writeUInt16LE(v); return this.raw(b); }
  i16(v: number): this { const b = Buffer.alloc(2); b.writeInt16LE(v); return this.raw(b); }
  u32(v: number): this { const b = Buffer.alloc(4); b.writeUInt32LE(v); return this.raw(b); }
  i32(v: number): this { const b = Buffer.alloc(4); b.writeInt32LE(v); return this.raw(b); }
  f32(v: number): this { const b = Buffer.alloc(4); b.writeFloatLE(v); return this.raw(b); }
  f64(v: number): this { const b = Buffer.alloc(8); b.writeDoubleLE(v); return this.raw(b); }
  u64(v: number | bigint): this { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v)); return this.raw(b); }
  i64(v: number | bigint): this { const b = Buffer.alloc(8); b.writeBigInt64LE(BigInt(v)); return this.raw(b); }
  str(s: string): this { const b = Buffer.from(s, 'utf8'); return this.u64(b.length).raw(b); }

  scalar(type: ScalarType, v: number | bigint | boolean | string): this {
    switch (type) {
      case 'string': return this.str(String(v));
      case 'bool': return this.u8(v ? 1 : 0);
      case 'u64': return this.u64(v as number | bigint);
      case 'i64': return this.i64(v as number | bigint);
      default: return this[type](Number(v));
    }
  }

  kv(key: string, value: KvValue): this {
    this.str(key).u32(T[value.type]);
    if (value.type !== 'array') return this.scalar(value.type, value.value);
    this.u32(T[value.elementType]).u64(value.values.length);
    for (const item of value.values) this.scalar(value.elementType, item);
    return this;
  }

  padTo(alignment: number): this {
    const pad = (alignment - (this.length % alignment)) % alignment;
    return this.raw(Buffer.alloc(pad));
  }

  toBuffer(): Buffer {
    return Buffer.concat(this.parts);
  }
}

export function tensorBytes(spec: TensorSpec): number {
  const type = ggmlTypeByName(spec.type ?? 'F32');
  if (!type) throw new Error(`unknown type ${spec.type}`);
  const elements = spec.dims.reduce((a, b) => a * b, 1);
  return (elements / type.blockSize) * type.typeSize;
}

export interface GgufSpec {
  version?: number;
  metadata?: Array<[string, KvValue]>;
  tensors?: TensorSpec[];
  alignment?: number;
}

/** A well-formed GGUF file (tensor data zero-filled) unless a spec field says otherwise. */
export function buildGguf(spec: GgufSpec): Buffer {
  const alignment = spec.alignment ?? 32;
  const tensors = spec.tensors ?? [];
  const metadata = spec.metadata ?? [];
  const w = new ByteWriter().raw('GGUF').u32(spec.version ?? 3).u64(tensors.length).u64(metadata.length);
  for (const [key, value] of metadata) w.kv(key, value);
  let offset = 0;
  for (const t of tensors) {
    const type = ggmlTypeByName(t.type ?? 'F32')!;
    w.str(t.name).u32(t.dims.length);
    for (const d of t.dims) w.u64(d);
    w.u32(type.id).u64(t.offset ?? BigInt(offset));
    offset += Math.ceil(tensorBytes(t) / alignment) * alignment;
  }
  if (tensors.length > 0) w.padTo(alignment).raw(Buffer.alloc(offset));
  return w.toBuffer();
}

export const str = (value: string): KvValue => ({ type: 'string', value });
export const u32 = (value: number): KvValue => ({ type: 'u32', value });
export const bool = (value: boolean): KvValue => ({ type: 'bool', value });
export const f32 = (value: number): KvValue => ({ type: 'f32', value });
export const strings = (values: string[]): KvValue => ({ type: 'array', elementType: 'string', values });

/** A small Qwen2-VL-style language model header. */
export function languageModel(options: { embedding?: number; arch?: string; name?: string; vocab?: string[] } = {}): Buffer {
  const arch = options.arch ?? 'qwen2vl';
  const n = options.embedding ?? 64;
  return buildGguf({
    metadata: [
      ['general.architecture', str(arch)],
      ['general.name', str(options.name ?? 'test model')],
      [`${arch}.embedding_length`, u32(n)],
      [`${arch}.block_count`, u32(1)],
      [`${arch}.context_length`, u32(4096)],
      [`${arch}.attention.head_count`, u32(4)],
      [`${arch}.attention.head_count_kv`, u32(2)],
      ['tokenizer.ggml.tokens', strings(options.vocab ?? ['a', 'b', 'c'])],
    ],
    tensors: [
      { name: 'token_embd.weight', dims: [n, 3], type: 'F16' },
      { name: 'blk.0.attn_q.weight', dims: [n, n], type: 'Q8_0' },
      { name: 'output_norm.weight', dims: [n] },
    ],
  });
}

/** A small vision projector (mmproj) header. */
export function projector(options: { projectionDim?: number | null; vision?: boolean; audio?: boolean } = {}): Buffer {
  const metadata: Array<[string, KvValue]> = [
    ['general.architecture', str('clip')],
    ['clip.has_vision_encoder', bool(options.vision ?? true)],
    ['clip.projector_type', str('qwen2.5vl')],
    ['clip.vision.image_size', u32(560)],
    ['clip.vision.patch_size', u32(14)],
  ];
  if (options.audio) metadata.push(['clip.has_audio_encoder', bool(true)]);
  if (options.projectionDim !== null) metadata.push(['clip.vision.projection_dim', u32(options.projectionDim ?? 64)]);
  return buildGguf({ metadata, tensors: [{ name: 'v.patch_embd.weight', dims: [14, 14, 3, 32], type: 'F16' }] });
}

/** A temporary folder, removed by `cleanup`. */
export function tempDir(): { dir: string; file(name: string, bytes: Buffer | string): string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'visplay-test-'));
  return {
    dir,
    file(name, bytes) {
      const path = join(dir, name);
      writeFileSync(path, bytes);
      return path;
    },
    cleanup() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
