// Durable state of a run folder. Two rules make kill -9 at any moment safe:
//   1. JSON files are replaced atomically (temporary file, fsync, rename, fsync of the folder);
//   2. JSONL records are appended, and the checkpoint names how many complete lines each file
//      holds; resuming truncates every file to that count, so lines written after the last
//      checkpoint (and any half-written line) disappear and are written again identically.
import { closeSync, existsSync, fstatSync, fsyncSync, ftruncateSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { VisplayError } from '../errors.js';

export function writeJsonAtomic(path: string, value: unknown): void {
  writeFileAtomic(path, `${JSON.stringify(value, null, 2)}\n`);
}

export function writeFileAtomic(path: string, data: string | Buffer): void {
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    mkdirSync(dirname(path), { recursive: true });
    const fd = openSync(tmp, 'w');
    try {
      // writeFileSync loops until every byte is written; a bare writeSync returns a short count
      // without throwing when the disk fills, and the truncated file would be renamed into place.
      writeFileSync(fd, data);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
    syncDir(dirname(path));
  } catch (e) {
    rmSync(tmp, { force: true });
    throw new VisplayError('ERR_OUTPUT', `cannot write ${path}: ${(e as Error).message}`);
  }
}

export function readJson<T>(path: string): T {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as T;
  } catch (e) {
    throw new VisplayError('ERR_CHECKPOINT', `cannot read ${path}: ${(e as Error).message}`);
  }
}

function syncDir(dir: string): void {
  try {
    const fd = openSync(dir, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // Some filesystems refuse to sync folders; the rename is still atomic.
  }
}

/** Append-only JSONL files whose committed length (in lines) the checkpoint records. */
export class JsonlLog {
  readonly #dir: string;
  readonly #lines = new Map<string, number>();

  constructor(dir: string, committed: Record<string, number> = {}) {
    this.#dir = dir;
    for (const [name, n] of Object.entries(committed)) this.#lines.set(name, n);
  }

  /** Cuts every file back to its committed line count (drops what a crash left after the checkpoint). */
  truncateToCommitted(known: string[]): void {
    for (const name of new Set([...known, ...this.#lines.keys()])) {
      const path = join(this.#dir, name);
      const keep = this.#lines.get(name) ?? 0;
      if (!existsSync(path)) {
        if (keep > 0) throw new VisplayError('ERR_CHECKPOINT', `${path} is missing but the checkpoint counts ${keep} records in it`);
        continue;
      }
      const lines = readFileSync(path, 'utf8').split('\n');
      const complete = lines.slice(0, -1);  // the part after the last newline is never complete
      if (complete.length < keep) throw new VisplayError('ERR_CHECKPOINT', `${path} has ${complete.length} records, the checkpoint counts ${keep}`);
      if (complete.length !== keep || lines.at(-1) !== '') {
        writeFileAtomic(path, complete.slice(0, keep).map((l) => `${l}\n`).join(''));
      }
    }
  }

  append(name: string, records: unknown[]): void {
    if (records.length === 0) return;
    const path = join(this.#dir, name);
    mkdirSync(dirname(path), { recursive: true });
    const fd = openSync(path, 'a');
    const size = fstatSync(fd).size;
    try {
      writeFileSync(fd, records.map((r) => `${JSON.stringify(r)}\n`).join(''));  // all of it, or ENOSPC
      fsyncSync(fd);
    } catch (e) {
      // Drop a partly written line, so a later append cannot glue onto it (a resume would cut it anyway).
      try { ftruncateSync(fd, size); } catch { /* the checkpoint's line count still rules on resume */ }
      throw new VisplayError('ERR_OUTPUT', `cannot append to ${path}: ${(e as Error).message}`);
    } finally {
      closeSync(fd);
    }
    this.#lines.set(name, (this.#lines.get(name) ?? 0) + records.length);
  }

  committed(): Record<string, number> {
    return Object.fromEntries(this.#lines);
  }
}
