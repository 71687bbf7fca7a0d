// kill -9 at ten seeded random points of a tiny `evolve`, `--resume` after each: every resume
// completes, the final records, adapters and optimizer states equal an uninterrupted run's with the
// same seed, and no partial file is ever left where a reader would take it (every JSONL line and
// JSON file parses, every GGUF file is whole, the states the checkpoint names load, and the
// temporary files a kill can strand are gone once a resume has run).
//
// The random model never writes a question that parses, so the Reasoner would never train: the run
// is stopped once iteration 1's candidates are committed and half of them are turned into kept ones
// (as evolve.test.ts does). From there the reference and the killed run continue: the Reasoner's
// steps, iteration 1's adapters, and all of iteration 2 (Questioner step, candidate chunk, finish).
//
// The kill plan comes from a seeded generator: for each kill, the checkpointed unit after which it
// comes ("anchor": an optimizer step, a candidate chunk or an iteration; -1 for the start-up) and
// how far into the next unit (a fraction of that unit's duration in the reference run).
import assert from 'node:assert/strict';
import { cpSync, existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { readGguf } from '../../src/gguf.js';
import type { Model } from '../../src/model.js';
import { evolve, resumeEvolve, type EvolveEvent } from '../../src/visplay/loop.js';
import type { QuestionRecord } from '../../src/visplay/records.js';
import { filesUnder, fingerprint, imagesDir, jsonl, runCli, seededRandom, succeeded, TINY } from './evolve-helpers.js';
import { loadTiny, scratchDir } from './helpers.js';

// Seed of the kill plan, chosen among the first 30 for a plan that reaches every unit (2, 2, 3, 1, 2 kills
// on the start-up and anchors 0-3).
const PLAN_SEED = 21;
const KILLS = 10;
// Two iterations of one Questioner step and one candidate chunk each; two Reasoner steps in iteration 1.
const CONFIG = { ...TINY, iterations: 2, questionerSteps: 1, reasonerSteps: 2, candidateImages: 2 };

interface Checkpoint {
  iteration: number;
  phase: 'questioner' | 'candidates' | 'reasoner' | 'finish';
  step: number;
  questionerState: string | null;
  reasonerState: string | null;
}

const PHASE_ORDER = { questioner: 0, candidates: 1, reasoner: 2, finish: 3 } as const;

/** Where an event that follows a commit puts the run: [iteration, phase, step] ordered like checkpoints. */
function anchorOf(e: { type: string; [k: string]: unknown }): [number, number, number] | null {
  if (e.type === 'step') {
    const m = e.metrics as { iteration: number; role: 'questioner' | 'reasoner'; step: number };
    return [m.iteration, PHASE_ORDER[m.role], m.step];
  }
  if (e.type === 'candidates') return [e.iteration as number, PHASE_ORDER.candidates, e.done as number];
  if (e.type === 'iteration') return [(e.summary as { iteration: number }).iteration + 1, 0, 0];
  return null;
}

function beforeOrAt(a: readonly number[], b: readonly number[]): boolean {
  for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return a[i]! < b[i]!;
  return true;
}

interface Kill {
  /** Index of the reference anchor after which the kill comes; -1: during start-up (before the first event). */
  anchor: number;
  /** Fraction of the next unit's reference duration (or of the start-up window) to wait. */
  fraction: number;
}

describe('kill -9 at ten random points of evolve, --resume after each', () => {
  let model: Model;
  before(async () => { model = await loadTiny(); });
  after(() => model?.dispose());

  /**
   * What a reader may take from the run folder is whole: JSON and JSONL parse line by line, every
   * GGUF file's data fits in it, the states the checkpoint names load, and so do the adapters of
   * the iterations it counts as finished. Temporary files only where a kill may have stranded them.
   */
  async function checkRunFolder(out: string, options: { finished: boolean }): Promise<string[]> {
    const temporaries: string[] = [];
    for (const rel of filesUnder(out)) {
      const path = join(out, rel);
      if (/\.tmp/.test(rel)) {
        temporaries.push(rel);
        continue;
      }
      if (rel.endsWith('.jsonl')) {
        const text = readFileSync(path, 'utf8');
        assert.ok(text === '' || text.endsWith('\n'), `${rel} ends in a partial line`);
        text.split('\n').filter(Boolean).forEach((line, i) => assert.doesNotThrow(() => JSON.parse(line), `${rel} line ${i + 1} does not parse`));
      } else if (rel.endsWith('.json')) {
        assert.doesNotThrow(() => JSON.parse(readFileSync(path, 'utf8')), `${rel} does not parse`);
      } else if (rel.endsWith('.gguf')) {
        await readGguf(path).catch((e: Error) => assert.fail(`${rel} is not a whole GGUF file: ${e.message}`));
      }
    }
    const cp = JSON.parse(readFileSync(join(out, 'checkpoint.json'), 'utf8')) as Checkpoint;
    const policyDirs = [cp.questionerState, cp.reasonerState].filter((s): s is string => s !== null).map((s) => join('state', s));
    for (const d of readdirSync(out).filter((n) => /^(questioner|reasoner)-\d+$/.test(n))) {
      if (options.finished || Number(d.split('-')[1]) < cp.iteration) policyDirs.push(d);
    }
    for (const d of policyDirs) {
      const policy = await model.loadPolicy(join(out, d)).catch((e: Error) => assert.fail(`${d} does not load: ${e.message}`));
      policy.dispose();
    }
    if (options.finished) assert.deepEqual(temporaries, [], 'a resume removes what a kill left');
    return temporaries;
  }

  it('every resume completes; records, adapters and states equal an uninterrupted run\'s', { timeout: 600_000 }, async () => {
    const testStarted = performance.now();
    // The shared start: iteration 1 up to its committed candidates, half of them made kept ones.
    const images = await imagesDir();
    const base = join(scratchDir(), 'base');
    const controller = new AbortController();
    const stopped = await evolve({ images, out: base, config: CONFIG }, {
      signal: controller.signal,
      onEvent: (e) => { if (e.type === 'candidates' && e.done === e.total) controller.abort(); },
    });
    assert.equal(stopped.completed, false);
    const candidates = join(base, 'iter-1', 'candidates.jsonl');
    writeFileSync(candidates, jsonl<QuestionRecord>(candidates).map((c, i) => `${JSON.stringify(i % 2 === 0
      ? { ...c, valid: true, type: 'numerical', question: 'How many shapes are in the image?', silver: String(1 + (i % 3)), confidence: 0.5, kept: true, dropReason: undefined }
      : c)}\n`).join(''));
    const reference = join(scratchDir(), 'reference');
    const killed = join(scratchDir(), 'killed');
    cpSync(base, reference, { recursive: true });
    cpSync(base, killed, { recursive: true });

    const baseSeconds = (performance.now() - testStarted) / 1000;
    // The uninterrupted run, timing each unit between anchors.
    const anchors: Array<{ at: [number, number, number]; ms: number }> = [];
    const t0 = performance.now();
    let openMs = 0;  // loading the model and the policies, up to the first event
    const result = await resumeEvolve(reference, {
      onEvent: (e: EvolveEvent) => {
        openMs ||= performance.now() - t0;
        const at = anchorOf(e as never);
        if (at) anchors.push({ at, ms: performance.now() - t0 });
      },
    });
    assert.equal(result.completed, true);
    // Reasoner steps 1-2, iteration 1, Questioner step 1, candidate chunk 1, iteration 2.
    assert.equal(anchors.length, 6, JSON.stringify(anchors));
    const expected = fingerprint(reference);
    const expectedStates = filesUnder(join(reference, 'state')).map((f) => `${f}:${readFileSync(join(reference, 'state', f)).toString('base64')}`);
    assert.ok(jsonl(join(reference, 'iter-1', 'reasoner.jsonl')).length > 0, 'the Reasoner trained');
    const unitMs = (i: number) => anchors[i + 1]!.ms - anchors[i]!.ms;

    // The plan: anchors -1 .. 3 (the unit after anchor 3 is iteration 2's candidate chunk; what
    // follows it is too short to be sure a kill lands before the run ends).
    const lastTarget = anchors.length - 3;
    const random = seededRandom(PLAN_SEED);
    const plan: Kill[] = Array.from({ length: KILLS }, () => ({ anchor: Math.floor(random() * (lastTarget + 2)) - 1, fraction: random() }))
      .sort((a, b) => a.anchor - b.anchor);

    const outcomes: string[] = [];
    let strandedTemporaries = 0;
    for (const [k, kill] of plan.entries()) {
      const cp = JSON.parse(readFileSync(join(killed, 'checkpoint.json'), 'utf8')) as Checkpoint;
      const position = [cp.iteration, PHASE_ORDER[cp.phase], cp.step];
      // Anchors already committed: a target among them means "during the unit the resume starts with".
      const committed = anchors.filter((a) => beforeOrAt(a.at, position)).length;
      let timer: NodeJS.Timeout | undefined;
      const arm = (child: { kill(signal: NodeJS.Signals): boolean }, ms: number) => {
        timer ??= setTimeout(() => child.kill('SIGKILL'), ms);
      };
      const run = await runCli(['evolve', '--resume', killed, '--json-log'], {
        timeoutMs: 300_000,
        // A resume starts node and tsx, then loads what the reference loaded before its first event.
        onSpawn: (child) => { if (kill.anchor < 0) arm(child, kill.fraction * openMs); },
        onLine: (line, child) => {
          const e = JSON.parse(line) as { type: string };
          const at = anchorOf(e);
          const index = at ? anchors.findIndex((a) => a.at.join() === at.join()) : -1;
          // The run's last iteration is over and only its last commit and report remain: kill now
          // rather than let it end unkilled (a safety net; the plan's units come before).
          if (index === anchors.length - 1) child.kill('SIGKILL');
          if (kill.anchor < 0) return;
          if (kill.anchor < committed) {
            // An earlier kill came later than this one's anchor: kill during the unit this resume
            // starts with, timed from its first event.
            arm(child, 0.6 * kill.fraction * unitMs(Math.min(committed - 1, anchors.length - 2)));
          } else if (index >= kill.anchor) {
            arm(child, 0.6 * kill.fraction * unitMs(Math.min(index, anchors.length - 2)));
          }
        },
      });
      clearTimeout(timer);
      const events = run.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { type: string }).filter((e) => e.type !== 'progress');
      outcomes.push(`kill ${k + 1} (anchor ${kill.anchor}, ${kill.fraction.toFixed(2)}): checkpoint ${cp.iteration}/${cp.phase}/${cp.step}, ` +
        `${events.length} events: ${events.map((e) => e.type).join(' ')}`);
      assert.equal(run.signal, 'SIGKILL', `run ${k + 1} was not killed: status ${run.status}\n${run.stderr}\n${outcomes.join('\n')}`);
      strandedTemporaries += (await checkRunFolder(killed, { finished: false })).length;
    }

    const last = await runCli(['evolve', '--resume', killed, '--json-log'], { timeoutMs: 300_000 });
    succeeded(last);
    await checkRunFolder(killed, { finished: true });
    assert.equal(fingerprint(killed), expected, `the killed run's records and adapters differ from the uninterrupted run's\n${outcomes.join('\n')}`);
    assert.deepEqual(filesUnder(join(killed, 'state')).map((f) => `${f}:${readFileSync(join(killed, 'state', f)).toString('base64')}`), expectedStates,
      'the final states (adapters and optimizer moments) are the uninterrupted run\'s');
    assert.ok(existsSync(join(killed, 'report', 'index.html')));
    // The plan and what each kill interrupted, for the record (node --test prints diagnostics).
    console.log(`# shared start ${baseSeconds.toFixed(0)} s, uninterrupted run ${(anchors.at(-1)!.ms / 1000).toFixed(0)} s (open ${(openMs / 1000).toFixed(1)} s; ` +
      `units: ${anchors.map((a, i) => ((a.ms - (i ? anchors[i - 1]!.ms : 0)) / 1000).toFixed(1)).join(', ')} s), ` +
      `killed run with its resumes ${((performance.now() - testStarted) / 1000 - baseSeconds - anchors.at(-1)!.ms / 1000).toFixed(0)} s`);
    for (const o of outcomes) console.log(`# ${o}`);
    console.log(`# temporary files stranded by kills (removed by the next resume): ${strandedTemporaries}`);
  });
});
