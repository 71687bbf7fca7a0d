// A forward-only, bounds-checked reader over the header of a (possibly multi-GB) GGUF file.
//
// The header is parsed front to back, so the cursor keeps one window of the file in memory and
// refills it in chunks as parsing advances; the tensor data behind the header is never read. Every
// read is checked against `limit`, the most bytes a header may span (a read beyond it means the
// counts and lengths read so far are nonsense: corrupt), then against the file size (a read past the
// end of a plausible header means the file was cut short: truncated). Nothing read from the file can make the
// cursor allocate more than max(CHUNK_BYTES, the largest single read), and single reads are bounded
// by the callers against the bytes that remain.
import type { FileHandle } from 'node:fs/promises';
import { VisplayError } from './errors.js';

/** Bytes fetched per refill: few syscalls for 10 MB vocabularies, little waste for 1 KB headers. */
const CHUNK_BYTES = 1 << 20;

export class GgufCursor {
  /** Absolute file offset of the next byte to read. Assignable: a read outside the window refills it. */
  position = 0;
  private window: Buffer = Buffer.alloc(0);
  /** Absolute file offset of window[0]. */
  private windowStart = 0;

  constructor(
    private readonly file: FileHandle,
    readonly fileSize: number,
    /** Most bytes the header may span. */
    readonly limit: number,
    /** How the file is named in messages. */
    private readonly subject: string,
  ) {}

  async u8(what: string): Promise<number> {
    await this.need(1, what);
    return this.window.readUInt8(this.offset(1));
  }

  async i8(what: string): Promise<number> {
    await this.need(1, what);
    return this.window.readInt8(this.offset(1));
  }

  async u16(what: string): Promise<number> {
    await this.need(2, what);
    return this.window.readUInt16LE(this.offset(2));
  }

  async i16(what: string): Promise<number> {
    await this.need(2, what);
    return this.window.readInt16LE(this.offset(2));
  }

  async u32(what: string): Promise<number> {
    await this.need(4, what);
    return this.window.readUInt32LE(this.offset(4));
  }

  async i32(what: string): Promise<number> {
    await this.need(4, what);
    return this.window.readInt32LE(this.offset(4));
  }

  async u64(what: string): Promise<bigint> {
    await this.need(8, what);
    return this.window.readBigUInt64LE(this.offset(8));
  }

  async i64(what: string): Promise<bigint> {
    await this.need(8, what);
    return this.window.readBigInt64LE(this.offset(8));
  }

  async f32(what: string): Promise<number> {
    await this.need(4, what);
    return this.window.readFloatLE(this.offset(4));
  }

  async f64(what: string): Promise<number> {
    await this.need(8, what);
    return this.window.readDoubleLE(this.offset(8));
  }

  /** `length` bytes as UTF-8; the caller has checked `length` against `remaining`. */
  async utf8(length: number, what: string): Promise<string> {
    await this.need(length, what);
    const start = this.offset(length);
    return this.window.toString('utf8', start, start + length);
  }

  /** `length` bytes as a copy. */
  async bytes(length: number, what: string): Promise<Buffer> {
    await this.need(length, what);
    const start = this.offset(length);
    return Buffer.from(this.window.subarray(start, start + length));
  }

  /** Moves past `length` bytes without reading them (large numeric arrays we do not keep). */
  skip(length: number, what: string): void {
    this.check(length, what);
    this.position += length;
  }

  /** Throws the error a failed read of `length` bytes at the cursor would throw, if it would. */
  check(length: number, what: string): void {
    const end = this.position + length;
    // The limit first: a length no header can have is corruption even when the file is also short.
    if (end > this.limit) {
      throw new VisplayError('ERR_GGUF_CORRUPT',
        `${this.subject} is corrupt: ${what} at byte ${this.position} would extend the header past ` +
        `${this.limit} bytes, more than any GGUF header needs`);
    }
    if (end > this.fileSize) {
      throw new VisplayError('ERR_GGUF_TRUNCATED',
        `${this.subject} is truncated: reading ${what} at byte ${this.position} needs ${length} bytes ` +
        `but the file ends at byte ${this.fileSize} (an interrupted download?)`);
    }
  }

  /** Makes [position, position + length) available in the window. */
  private async need(length: number, what: string): Promise<void> {
    this.check(length, what);
    const windowEnd = this.windowStart + this.window.length;
    if (this.position >= this.windowStart && this.position + length <= windowEnd) return;
    const size = Math.min(Math.max(length, CHUNK_BYTES), this.fileSize - this.position);
    const next = Buffer.allocUnsafe(size);
    let filled = 0;
    while (filled < size) {
      const { bytesRead } = await this.file.read(next, filled, size - filled, this.position + filled);
      if (bytesRead === 0) break; // the file shrank under us; the length check below reports it
      filled += bytesRead;
    }
    if (filled < length) {
      throw new VisplayError('ERR_GGUF_TRUNCATED',
        `${this.subject} is truncated: it ended at byte ${this.position + filled} while reading ${what} ` +
        '(was it being written or replaced while being read?)');
    }
    this.window = next.subarray(0, filled);
    this.windowStart = this.position;
  }

  /** Offset in the window of a `length`-byte read at the cursor; advances the cursor past it. */
  private offset(length: number): number {
    const at = this.position - this.windowStart;
    this.position += length;
    return at;
  }
}
