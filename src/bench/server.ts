// The vendored llama-server as a peer: started on a free loopback port with one slot per parallel
// sequence, sent the image workload of rollouts.ts over its OpenAI-compatible
// /v1/chat/completions (each image as a data: URL), one request per sequence, all in flight at
// once, as an RL trainer driving a server would. Same model, projector, threads, batch sizes and
// flash-attention setting as ours; the same sampling (T = 1 over the full vocabulary: top-k, top-p
// and min-p off, which llama-server would otherwise apply by default); `ignore_eos` so every
// sequence is `tg` tokens long. We ask for no log-probs (ours returns them): the server's cheapest
// path.
//
// Figures: generated tokens / the round's wall time (first request sent to last response read;
// request bodies are encoded before the clock starts), and prompt tokens as requested (the sum of
// the responses' usage.prompt_tokens) / the longest prompt time the server reports for a request
// (timings.prompt_ms: image encode + prefill, its slots working concurrently).
//
// The server is stopped with SIGTERM (SIGKILL after 5 s) in every case: end of a level, an error,
// Ctrl-C or SIGTERM to us (processes.ts).
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { peakRssOf } from './memory.js';
import { track } from './processes.js';
import { IMAGE_PROMPT, makeImageRound, type ImageWorkload, type OnRun } from './rollouts.js';
import { stat, type Stat } from './stats.js';

export interface LlamaServerOptions {
  bin: string;
  modelPath: string;
  mmprojPath: string;
  /** Slots (-np). */
  parallel: number;
  /** Total KV cells (-c), split evenly between the slots. */
  contextSize: number;
  threads: number;
  gpuLayers?: number;
  /** How long to wait for /health to answer 200 (default 120 s). */
  startTimeoutMs?: number;
}

/** A free TCP port on the loopback interface (the OS picks it; we release it right away). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address();
      srv.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class LlamaServer {
  readonly url: string;
  readonly bin: string;
  readonly args: readonly string[];
  readonly #child: ChildProcess;
  #log = '';
  #exited: Promise<void>;
  #running = true;

  private constructor(child: ChildProcess, url: string, bin: string, args: string[]) {
    this.#child = child;
    this.url = url;
    this.bin = bin;
    this.args = args;
    child.stdout!.setEncoding('utf8').on('data', (d: string) => this.#append(d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => this.#append(d));
    this.#exited = new Promise((resolve) => child.once('exit', () => {
      this.#running = false;
      resolve();
    }));
  }

  /** Starts the server and waits until it answers /health; retries on a port taken meanwhile. */
  static async start(o: LlamaServerOptions): Promise<LlamaServer> {
    for (let attempt = 0; ; attempt++) {
      const port = await freePort();
      const args = ['-m', o.modelPath, '--mmproj', o.mmprojPath, '--host', '127.0.0.1', '--port', String(port),
        '-np', String(o.parallel), '-c', String(o.contextSize), '-b', '512', '-ub', '512', '-fa', 'off',
        '-t', String(o.threads), '-tb', String(o.threads), '--no-webui'];
      if (o.gpuLayers !== undefined) args.push('-ngl', String(o.gpuLayers));
      const child = spawn(o.bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
      track(child);
      const server = new LlamaServer(child, `http://127.0.0.1:${port}`, o.bin, args);
      try {
        await server.#waitReady(o.startTimeoutMs ?? 120_000);
        return server;
      } catch (e) {
        await server.stop();
        if (attempt < 2 && /couldn't bind/.test(server.#log)) continue;
        throw e;
      }
    }
  }

  get pid(): number | undefined {
    return this.#child.pid;
  }

  /** The server's peak RSS so far, MiB (read from /proc while it runs). */
  peakRssMiB(): number | null {
    return this.#running && this.#child.pid !== undefined ? peakRssOf(this.#child.pid) : null;
  }

  /** The last lines it logged (for error messages). */
  logTail(lines = 3): string {
    return this.#log.trim().split('\n').slice(-lines).map((l) => l.trim()).join(' | ');
  }

  /** SIGTERM, then SIGKILL after 5 s. Idempotent. */
  async stop(): Promise<void> {
    if (!this.#running) return;
    this.#child.kill('SIGTERM');
    const timer = setTimeout(() => this.#child.kill('SIGKILL'), 5000);
    await this.#exited;
    clearTimeout(timer);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  /** POSTs a JSON body (already serialised); rejects with the server's own error message. */
  async post(path: string, body: string): Promise<unknown> {
    const res = await fetch(`${this.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    const text = await res.text();
    if (!res.ok) {
      let message = text.slice(0, 300);
      try {
        message = (JSON.parse(text) as { error?: { message?: string } }).error?.message ?? message;
      } catch {
        // not JSON
      }
      throw new Error(`llama-server answered ${res.status}: ${message}`);
    }
    return JSON.parse(text);
  }

  #append(d: string): void {
    this.#log = (this.#log + d).slice(-16 * 1024);
  }

  async #waitReady(timeoutMs: number): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    while (performance.now() < deadline) {
      if (!this.#running) throw new Error(`llama-server exited while starting: ${this.logTail()}`);
      try {
        const res = await fetch(`${this.url}/health`, { signal: AbortSignal.timeout(2000) });
        await res.text();
        if (res.ok) return;
      } catch {
        // not listening yet
      }
      await sleep(100);
    }
    throw new Error(`llama-server did not become ready in ${timeoutMs / 1000} s: ${this.logTail()}`);
  }
}

export interface ServerImageResult {
  generated: Stat;
  prompt: Stat;
  roundSeconds: Stat;
  /** usage.prompt_tokens of one request (the server's count of text + image tokens). */
  promptTokens: number;
  peakRssMiB: number | null;
  /** The server's command line (port included), for reproducing the run. */
  command: string[];
}

interface ChatResponse {
  choices?: Array<{ message?: { content?: string } }>;
  usage?: { prompt_tokens: number; completion_tokens: number };
  timings?: { prompt_n: number; prompt_ms: number; predicted_n: number; predicted_ms: number };
}

/** One request body per sequence of the round (serialised up front, outside the timed span). */
function roundBodies(images: Buffer[], samples: number, tg: number, round: number): string[] {
  return images.flatMap((png, i) => {
    const url = `data:image/png;base64,${png.toString('base64')}`;
    return Array.from({ length: samples }, (_, s) => JSON.stringify({
      messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url } }, { type: 'text', text: IMAGE_PROMPT }] }],
      max_tokens: tg, temperature: 1, top_k: 0, top_p: 1, min_p: 0, ignore_eos: true, seed: round * 100_000 + i * 1000 + s,
    }));
  });
}

export async function serverImages(server: LlamaServer, w: ImageWorkload, onRun?: OnRun): Promise<ServerImageResult> {
  const generated: number[] = [];
  const prompt: number[] = [];
  const seconds: number[] = [];
  let promptTokens = 0;
  for (let r = 0; r <= w.repeats; r++) {
    onRun?.(r, w.repeats);
    const round = await makeImageRound(w.parallel, w.imageSize, r);
    const bodies = roundBodies(round.images, round.samples, w.tg, r);
    const t0 = performance.now();
    const responses = await Promise.all(bodies.map((b) => server.post('/v1/chat/completions', b) as Promise<ChatResponse>));
    const wall = (performance.now() - t0) / 1000;
    if (r === 0) continue;
    let completion = 0;
    let requested = 0;
    let longestPromptMs = 0;
    for (const res of responses) {
      if (!res.usage || !res.timings) throw new Error('llama-server sent a response without usage or timings');
      completion += res.usage.completion_tokens;
      requested += res.usage.prompt_tokens;
      longestPromptMs = Math.max(longestPromptMs, res.timings.prompt_ms);
    }
    if (completion !== bodies.length * w.tg) {
      throw new Error(`llama-server generated ${completion} tokens, not ${bodies.length} x ${w.tg} (ignore_eos not honoured?)`);
    }
    promptTokens = requested / responses.length;
    generated.push(completion / wall);
    prompt.push(requested / (longestPromptMs / 1000));
    seconds.push(wall);
  }
  return { generated: stat(generated), prompt: stat(prompt), roundSeconds: stat(seconds), promptTokens, peakRssMiB: server.peakRssMiB(), command: [server.bin, ...server.args] };
}
