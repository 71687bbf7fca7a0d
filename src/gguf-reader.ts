// A defensive GGUF header reader in TypeScript, so a wrong or damaged model file is reported in words
// before llama.cpp sees it.
//
// Layout (GGUF v2/v3, little-endian; llama.cpp's ggml/src/gguf.cpp is the reference):
//   magic "GGUF" | version u32 | tensor_count u64 | kv_count u64
//   kv_count x  (key: string, value_type u32, value)      string = u64 length + UTF-8 bytes
//                                                          array  = elem_type u32 + u64 count + items
//   tensor_count x  (name: string, n_dims u32, ne u64[n_dims], ggml_type u32, offset u64)
//   padding to general.alignment (default 32) | tensor data (offsets relative to its start)
//
// Nothing in a file may crash the reader or make it allocate absurdly: every length and count is
// checked against what the header could hold before it is used (see GgufCursor), long arrays are
// skipped rather than materialized, and the multi-GB data section is never read.
import { open, type FileHandle } from 'node:fs/promises';
import { VisplayError } from './errors.js';
import { describeFile, fileError } from './files.js';
import { GgufCursor } from './gguf-cursor.js';
import { describeValue } from './gguf-metadata.js';
import { ggmlType } from './ggml-types.js';

// ---- types --------------------------------------------------------------------------------------

/** GGUF value types, indexed by their id in the file. */
const VALUE_TYPES = ['u8', 'i8', 'u16', 'i16', 'u32', 'i32', 'f32', 'bool', 'string', 'array', 'u64', 'i64', 'f64'] as const;
export type GgufValueType = (typeof VALUE_TYPES)[number];

/** u64/i64 values are numbers when they fit in 2^53, bigints otherwise. */
export type GgufScalar = number | bigint | boolean | string;

export interface GgufArray {
  readonly type: 'array';
  readonly elementType: Exclude<GgufValueType, 'array'>;
  readonly length: number;
  /** The items, or null when the array was longer than `maxArrayItems` and not asked for. */
  readonly values: GgufScalar[] | null;
}

export type GgufValue = GgufScalar | GgufArray;

export interface GgufTensorInfo {
  name: string;
  /** ne[0..n_dims): ne[0] is the contiguous (row) dimension. */
  dims: number[];
  /** ggml type name, e.g. "Q4_K". */
  type: string;
  typeId: number;
  /** Byte offset relative to `dataOffset`. */
  offset: number;
  /** Bytes of data: ne[0] / blockSize * typeSize * ne[1] * ne[2] * ne[3]. */
  size: number;
}

export interface GgufFile {
  path: string;
  /** How the file is named in messages, e.g. "model file m.gguf (--model)". */
  label: string;
  version: number;
  tensorCount: number;
  metadata: Map<string, GgufValue>;
  tensors: GgufTensorInfo[];
  alignment: number;
  /** Absolute offset of the tensor data section. */
  dataOffset: number;
  fileSize: number;
}

export interface ReadGgufOptions {
  /** What the file is, for messages: "model file", "mmproj file" (default "file"). */
  role?: string;
  /** The option the path came from, for messages: "--model". */
  option?: string;
  /** Longest header accepted (default 64 MiB; real headers with 150k-token vocabularies take ~10 MB). */
  maxHeaderBytes?: number;
  /** Arrays longer than this keep only their length (default 64). */
  maxArrayItems?: number;
  /** Keys whose arrays are kept whole regardless of length (e.g. "tokenizer.ggml.tokens"). */
  fullArrays?: readonly string[];
}

// ---- limits -------------------------------------------------------------------------------------

const MAGIC = 'GGUF';
const DEFAULT_ALIGNMENT = 32;
const DEFAULT_MAX_HEADER_BYTES = 64 * 1024 * 1024;
const DEFAULT_MAX_ARRAY_ITEMS = 64;
const MAX_KV_COUNT = 1_000_000;
const MAX_TENSOR_COUNT = 1_000_000;
/** GGML_MAX_DIMS */
const MAX_DIMS = 4;
/** GGML_MAX_NAME: tensor names are stored in a char[64] including the terminating NUL. */
const MAX_TENSOR_NAME_BYTES = 63;
/** Smallest encodings, to bound counts by the bytes that could hold them. */
const MIN_KV_BYTES = 8 + 4 + 1; // empty key, type, one-byte value
const MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8; // empty name, n_dims = 0, type, offset
const INT64_MAX = (1n << 63n) - 1n;
const FIXED_SIZES: Partial<Record<GgufValueType, number>> = {
  u8: 1, i8: 1, u16: 2, i16: 2, u32: 4, i32: 4, f32: 4, bool: 1, u64: 8, i64: 8, f64: 8,
};

// ---- reader -------------------------------------------------------------------------------------

export async function readGguf(path: string, options: ReadGgufOptions = {}): Promise<GgufFile> {
  const label = describeFile(path, options.role ?? 'file', options.option);
  let file: FileHandle;
  let fileSize: number;
  try {
    file = await open(path, 'r');
  } catch (e) {
    throw fileError(e, label);
  }
  try {
    try {
      const stats = await file.stat();
      if (stats.isDirectory()) throw Object.assign(new Error('is a directory'), { code: 'EISDIR' });
      fileSize = stats.size;
    } catch (e) {
      throw fileError(e, label);
    }
    const cursor = new GgufCursor(file, fileSize, options.maxHeaderBytes ?? DEFAULT_MAX_HEADER_BYTES, label);
    return await new HeaderParser(cursor, path, label, options).parse();
  } finally {
    await file.close();
  }
}

class HeaderParser {
  private readonly maxArrayItems: number;
  private readonly fullArrays: ReadonlySet<string>;

  constructor(
    private readonly c: GgufCursor,
    private readonly path: string,
    private readonly label: string,
    options: ReadGgufOptions,
  ) {
    this.maxArrayItems = options.maxArrayItems ?? DEFAULT_MAX_ARRAY_ITEMS;
    this.fullArrays = new Set(options.fullArrays ?? []);
  }

  async parse(): Promise<GgufFile> {
    await this.readMagic();
    const version = await this.readVersion();
    const tensorCount = await this.readCount('tensor count', MAX_TENSOR_COUNT, MIN_TENSOR_INFO_BYTES);
    const kvCount = await this.readCount('key-value count', MAX_KV_COUNT, MIN_KV_BYTES);

    const metadata = new Map<string, GgufValue>();
    for (let i = 0; i < kvCount; i++) await this.readKeyValue(i, metadata);
    const alignment = this.alignment(metadata);

    const tensors: GgufTensorInfo[] = [];
    const names = new Set<string>();
    for (let i = 0; i < tensorCount; i++) {
      const tensor = await this.readTensorInfo(i);
      if (names.has(tensor.name)) this.corrupt(`tensor name '${tensor.name}' appears twice`);
      names.add(tensor.name);
      tensors.push(tensor);
    }

    // llama.cpp pads to the alignment only when there is data to align.
    const dataOffset = tensorCount > 0 ? alignUp(this.c.position, alignment) : this.c.position;
    this.checkTensorLayout(tensors, alignment, dataOffset);
    return {
      path: this.path, label: this.label, version, tensorCount, metadata, tensors, alignment, dataOffset,
      fileSize: this.c.fileSize,
    };
  }

  private async readMagic(): Promise<void> {
    const size = this.c.fileSize;
    if (size === 0) throw new VisplayError('ERR_NOT_GGUF', `${this.label} is empty (0 bytes), not a GGUF file`);
    // A few bytes past the magic feed the hint about what else the file might be. They are in the
    // cursor's window, so stepping back to just after the magic costs nothing.
    const head = await this.c.bytes(Math.min(size, 16), 'the file signature');
    if (size >= 4 && head.toString('latin1', 0, 4) === MAGIC) {
      this.c.position = MAGIC.length;
      return;
    }
    const shown = [...head.subarray(0, 4)].map((b) => b.toString(16).padStart(2, '0')).join(' ');
    const what = size < 4 ? `it has only ${size} bytes: ${shown}` : `starts with bytes ${shown}`;
    const hint = formatHint(head);
    throw new VisplayError('ERR_NOT_GGUF', `${this.label} is not a GGUF file (${what})${hint ? `: ${hint}` : ''}`);
  }

  private async readVersion(): Promise<number> {
    const version = await this.c.u32('the GGUF version');
    if (version === 2 || version === 3) return version;
    if (version === 1) {
      throw new VisplayError('ERR_GGUF_UNSUPPORTED',
        `${this.label} is GGUF version 1, which llama.cpp no longer loads: convert the model again with a current llama.cpp`);
    }
    if (version !== 0 && (version & 0xffff) === 0) {
      // A big-endian file's small version number reads as a huge little-endian one.
      throw new VisplayError('ERR_GGUF_UNSUPPORTED',
        `${this.label} is a big-endian GGUF file; this machine needs the little-endian one`);
    }
    if (version > 3) {
      throw new VisplayError('ERR_GGUF_UNSUPPORTED',
        `${this.label} is GGUF version ${version}; visplay-native reads versions 2 and 3`);
    }
    return this.corrupt('GGUF version is 0', 4);
  }

  /** A u64 count, bounded by `max` and by how many of its smallest items the header could hold. */
  private async readCount(what: string, max: number, minItemBytes: number): Promise<number> {
    const at = this.c.position;
    const count = await this.c.u64(`the ${what}`);
    const room = Math.floor((this.c.limit - this.c.position) / minItemBytes);
    if (count > BigInt(Math.min(max, room))) {
      this.corrupt(`${what} is ${count}, more than a GGUF header can hold`, at);
    }
    return Number(count);
  }

  private async readKeyValue(index: number, metadata: Map<string, GgufValue>): Promise<void> {
    const at = this.c.position;
    const key = await this.readString(`key ${index}`);
    if (key.length === 0) this.corrupt(`key ${index} is empty`, at);
    if (metadata.has(key)) this.corrupt(`key '${key}' appears twice`, at);
    const type = await this.readValueType(`the type of key '${key}'`);
    const value = type === 'array'
      ? await this.readArray(key)
      : await this.readScalar(type, `the value of key '${key}'`);
    metadata.set(key, value);
  }

  private async readValueType(what: string): Promise<GgufValueType> {
    const at = this.c.position;
    const id = await this.c.u32(what);
    const type = VALUE_TYPES[id];
    if (type === undefined) this.corrupt(`${what} is ${id}, not a GGUF value type (0-${VALUE_TYPES.length - 1})`, at);
    return type;
  }

  private async readArray(key: string): Promise<GgufArray> {
    const typeAt = this.c.position;
    const elementType = await this.readValueType(`the element type of array '${key}'`);
    if (elementType === 'array') this.corrupt(`array '${key}' holds arrays, which GGUF does not allow`, typeAt);
    const countAt = this.c.position;
    const count = await this.c.u64(`the length of array '${key}'`);
    const minItemBytes = FIXED_SIZES[elementType] ?? 8; // a string is at least its u64 length
    if (count > BigInt(Math.floor((this.c.limit - this.c.position) / minItemBytes))) {
      this.corrupt(`array '${key}' claims ${count} items, more than a GGUF header can hold`, countAt);
    }
    const length = Number(count);
    const keep = length <= this.maxArrayItems || this.fullArrays.has(key);
    const values: GgufScalar[] | null = keep ? [] : null;
    const fixed = FIXED_SIZES[elementType];
    if (!keep && fixed !== undefined) {
      this.c.skip(length * fixed, `array '${key}'`);
    } else {
      for (let i = 0; i < length; i++) {
        const what = `item ${i} of array '${key}'`;
        if (values) values.push(await this.readScalar(elementType, what));
        else this.c.skip(await this.readStringLength(what), what);
      }
    }
    return { type: 'array', elementType, length, values };
  }

  private async readScalar(type: Exclude<GgufValueType, 'array'>, what: string): Promise<GgufScalar> {
    const c = this.c;
    switch (type) {
      case 'u8': return c.u8(what);
      case 'i8': return c.i8(what);
      case 'u16': return c.u16(what);
      case 'i16': return c.i16(what);
      case 'u32': return c.u32(what);
      case 'i32': return c.i32(what);
      case 'f32': return c.f32(what);
      case 'f64': return c.f64(what);
      case 'bool': return (await c.u8(what)) !== 0;
      case 'u64': return narrow(await c.u64(what));
      case 'i64': return narrow(await c.i64(what));
      case 'string': return this.readString(what);
    }
  }

  private async readString(what: string): Promise<string> {
    const length = await this.readStringLength(what);
    return this.c.utf8(length, what);
  }

  private async readStringLength(what: string): Promise<number> {
    const at = this.c.position;
    const length = await this.c.u64(`the length of ${what}`);
    if (length > BigInt(this.c.limit - this.c.position)) {
      this.corrupt(`the length of ${what} is ${length} bytes, more than a GGUF header can hold`, at);
    }
    return Number(length);
  }

  private alignment(metadata: Map<string, GgufValue>): number {
    const value = metadata.get('general.alignment');
    if (value === undefined) return DEFAULT_ALIGNMENT;
    if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0 || (value & (value - 1)) !== 0) {
      this.corrupt(`general.alignment is ${describeValue(value)}, not a power of two`);
    }
    return value;
  }

  private async readTensorInfo(index: number): Promise<GgufTensorInfo> {
    const nameAt = this.c.position;
    const name = await this.readString(`the name of tensor ${index}`);
    if (Buffer.byteLength(name) > MAX_TENSOR_NAME_BYTES) {
      this.corrupt(`tensor ${index} has a ${Buffer.byteLength(name)}-byte name; ggml allows ${MAX_TENSOR_NAME_BYTES}`, nameAt);
    }

    const dimsAt = this.c.position;
    const nDims = await this.c.u32(`the dimension count of tensor '${name}'`);
    if (nDims > MAX_DIMS) this.corrupt(`tensor '${name}' has ${nDims} dimensions; ggml allows at most ${MAX_DIMS}`, dimsAt);
    const ne: bigint[] = [];
    for (let d = 0; d < nDims; d++) {
      const at = this.c.position;
      const n = await this.c.u64(`dimension ${d} of tensor '${name}'`);
      if (n > INT64_MAX) this.corrupt(`dimension ${d} of tensor '${name}' is ${n}, more than ggml can index`, at);
      ne.push(n);
    }
    const elements = ne.reduce((a, b) => a * b, 1n);
    if (elements > INT64_MAX) this.corrupt(`tensor '${name}' has ${elements} elements, more than ggml can index`, dimsAt);

    const typeAt = this.c.position;
    const typeId = await this.c.u32(`the type of tensor '${name}'`);
    const type = ggmlType(typeId);
    if (!type) this.corrupt(`tensor '${name}' has type ${typeId}, not a ggml type`, typeAt);
    const rowLength = ne[0] ?? 1n;
    if (rowLength % BigInt(type.blockSize) !== 0n) {
      this.corrupt(`tensor '${name}' of type ${type.name} has rows of ${rowLength} elements, ` +
        `not a multiple of its block size ${type.blockSize}`, dimsAt);
    }
    const size = (elements / BigInt(type.blockSize)) * BigInt(type.typeSize);

    const offsetAt = this.c.position;
    const offset = await this.c.u64(`the data offset of tensor '${name}'`);
    if (offset + size > BigInt(Number.MAX_SAFE_INTEGER)) {
      this.corrupt(`tensor '${name}' claims data at bytes ${offset}..${offset + size}, beyond any file`, offsetAt);
    }
    return { name, dims: ne.map(Number), type: type.name, typeId, offset: Number(offset), size: Number(size) };
  }

  /**
   * llama.cpp requires the tensors to be stored back to back in header order, each padded to the
   * alignment; then the data must fit in the file.
   */
  private checkTensorLayout(tensors: GgufTensorInfo[], alignment: number, dataOffset: number): void {
    let expected = 0;
    let end = dataOffset;
    let last: GgufTensorInfo | undefined;
    for (const t of tensors) {
      if (t.offset !== expected) {
        this.corrupt(`tensor '${t.name}' has data offset ${t.offset}, expected ${expected} ` +
          `(tensors are stored in order, each padded to ${alignment} bytes)`);
      }
      expected += alignUp(t.size, alignment);
      if (dataOffset + t.offset + t.size >= end) {
        end = dataOffset + t.offset + t.size;
        last = t;
      }
    }
    if (end > this.c.fileSize) {
      const which = last ? `tensor '${last.name}' ends at byte ${end}` : `its data starts at byte ${end}`;
      throw new VisplayError('ERR_GGUF_TRUNCATED',
        `${this.label} is truncated: ${which} but the file has only ${this.c.fileSize} bytes ` +
        '(an interrupted download? compare its size with the source)');
    }
  }

  private corrupt(what: string, at?: number): never {
    const where = at === undefined ? '' : ` (at byte ${at})`;
    throw new VisplayError('ERR_GGUF_CORRUPT', `${this.label} is corrupt: ${what}${where}`);
  }
}

function alignUp(n: number, alignment: number): number {
  return Math.ceil(n / alignment) * alignment;
}

function narrow(n: bigint): number | bigint {
  return n >= BigInt(Number.MIN_SAFE_INTEGER) && n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n;
}

/** What a file that is not GGUF probably is, from its first bytes; '' when unknown. */
function formatHint(head: Buffer): string {
  const text = head.toString('latin1');
  if (text.startsWith('version https')) {
    return 'it is a Git LFS pointer, not the file itself: fetch it with `git lfs pull` or download it directly';
  }
  if (/^\s*</.test(text)) return 'it looks like a web page (did the download save an HTML error page?)';
  if (text.startsWith('PK\x03\x04')) return 'it is a ZIP archive (a PyTorch checkpoint?): convert the model with llama.cpp\'s convert_hf_to_gguf.py';
  if (head.length >= 9 && head[8] === 0x7b /* { */) {
    return 'it looks like a safetensors file: convert the model with llama.cpp\'s convert_hf_to_gguf.py';
  }
  if (['lmgg', 'fmgg', 'tjgg'].includes(text.slice(0, 4))) return 'it is a pre-GGUF GGML file: convert it with a current llama.cpp';
  return '';
}
