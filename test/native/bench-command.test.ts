// `visplay-native bench` end to end through the CLI on the tiny model: one --quick run with --json and
// --plot. The JSON must be one valid document whose every row has figures or a skip reason, whose
// image encodes equal the distinct images, whose ratios are ours / peer; the PNG must decode; no
// llama-server may be left running. Bad options fail in milliseconds, before any model loads.
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import sharp from 'sharp';
import type { BenchResult } from '../../src/bench/index.js';
import { PACKAGE_ROOT } from '../../src/native.js';
import { runCli } from './evolve-helpers.js';
import { scratchDir, tinyFiles } from './helpers.js';

const cli = (args: string[], timeoutMs: number) => runCli(args, { timeoutMs });

/** Command lines of every live process that runs `name`. */
function processesNamed(name: string): string[] {
  const out: string[] = [];
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
      if (cmd.includes(name)) out.push(cmd);
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

describe('bench command', () => {
  before(async () => {
    await tinyFiles();
  });

  it('--quick --json --plot: every row has figures or a reason, encodes match, ratios are ours / peer, the PNG decodes', { timeout: 900_000 }, async () => {
    const dir = scratchDir();
    const png = join(dir, 'bench.png');
    const run = await cli(['bench', '--quick', '--json', '--plot', png], 900_000);
    assert.equal(run.signal, null, `killed by ${run.signal}; stderr:\n${run.stderr}`);
    assert.equal(run.status, 0, run.stderr);
    const r = JSON.parse(run.stdout) as BenchResult;  // one document, nothing else on stdout
    assert.equal(r.benchmark, 'visplay-native bench');
    assert.equal(r.settings.quick, true);
    assert.equal(r.settings.repeats, 1);
    assert.deepEqual(r.rollouts.map((l) => l.parallel), [1, 8, 32]);
    assert.ok(r.machine.cpu.length > 0 && r.machine.cores > 0);
    assert.match(run.stderr, /bench\s+\d+s/, 'a progress line on stderr');

    // Every row: our figure and the peer's, or the reason the peer was skipped.
    const sections = new Set(r.rows.map((row) => row.section));
    assert.deepEqual([...sections], ['rollouts, text prompt', 'rollouts, image prompts', 'GRPO train step', 'peak memory']);
    for (const row of r.rows) {
      const what = `${row.section} / ${row.metric} / P=${row.parallel} / ${row.peer}`;
      if (row.skipped === null) {
        assert.ok(typeof row.ours === 'number' && row.ours > 0 && Number.isFinite(row.ours), `${what}: ours ${row.ours}`);
        assert.ok(typeof row.peerValue === 'number' && row.peerValue > 0 && Number.isFinite(row.peerValue), `${what}: peer ${row.peerValue}`);
        assert.ok(row.ratio !== null && Math.abs(row.ratio - row.ours / row.peerValue) <= 1e-9 * row.ratio, `${what}: ratio ${row.ratio}`);
      } else {
        assert.ok(row.skipped.length > 0, `${what}: an empty skip reason`);
        assert.equal(row.peerValue, null, what);
        assert.equal(row.ratio, null, what);
      }
      if (row.unit === 'tokens/s') assert.ok(typeof row.ours === 'number' && row.ours > 0, `${what}: our throughput is always measured`);
    }
    // Six rollout rows per workload (generated and prompt at 1, 8, 32), one train-step row, four memory rows.
    assert.equal(r.rows.length, 12 + 1 + 4);
    // The tools are built by scripts/test.mjs (build-native.mjs --tools), so here nothing rollout-side is skipped.
    const rollout = r.rows.filter((row) => row.section.startsWith('rollouts'));
    if (existsSync(join(PACKAGE_ROOT, 'build', 'bin', 'llama-server')) && existsSync(join(PACKAGE_ROOT, 'build', 'bin', 'llama-batched-bench'))) {
      for (const row of rollout) assert.equal(row.skipped, null, `${row.metric} P=${row.parallel} vs ${row.peer}: ${row.skipped}`);
    }
    // GPU memory: a figure on a CUDA build with a device, otherwise a reason.
    const gpuRow = r.rows.find((row) => row.metric.startsWith('GPU memory'))!;
    if (!r.machine.cudaBuild) assert.match(gpuRow.skipped ?? '', /CPU build/);

    // Image encodes per round equal the distinct images: 1 image at P=1 and 8, 4 at P=32.
    assert.equal(r.imageEncodesMatch, true);
    assert.deepEqual(r.imageEncodes.map((c) => [c.parallel, c.distinctImages, c.imageEncodes]), [[1, 1, [1]], [8, 1, [1]], [32, 4, [4]]]);

    // The server was stopped: no process with its command line is alive.
    for (const level of r.rollouts) {
      if ('skipped' in level.image.server) continue;
      const port = level.image.server.command[level.image.server.command.indexOf('--port') + 1]!;
      const left = processesNamed('llama-server').filter((cmd) => cmd.includes(`--port ${port} `));
      assert.deepEqual(left, [], `llama-server on port ${port} still running`);
    }

    const meta = await sharp(png).metadata();
    assert.equal(meta.format, 'png');
    assert.ok(meta.width! >= 600 && meta.height! >= 300, `${meta.width}x${meta.height}`);
  });

  it('rejects a plot file that is not .png or .svg, and a bad --repeats, before loading anything', async () => {
    const plot = await cli(['bench', '--plot', 'chart.txt'], 60_000);
    assert.equal(plot.status, 1);
    assert.equal(plot.stdout, '');
    assert.match(plot.stderr, /^visplay-native: Expected a file name ending in \.png or \.svg for plot but received chart\.txt of type string/);
    const repeats = await cli(['bench', '--repeats', '0'], 60_000);
    assert.equal(repeats.status, 1);
    assert.match(repeats.stderr, /^visplay-native: Expected integer between 1 and 1000 for repeats but received 0/);
    const noProjector = await cli(['bench', '--model', 'x.gguf'], 60_000);
    assert.equal(noProjector.status, 1);
    assert.equal(noProjector.stderr.trim().split('\n').length, 1, noProjector.stderr);
  });
});
