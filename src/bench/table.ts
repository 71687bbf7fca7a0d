// The human-readable report of `visplay-native bench`: the machine, one Markdown table of absolute
// figures and ours/peer ratios, and the notes that say what each workload was.
import { basename } from 'node:path';
import type { BenchResult, BenchRow } from './index.js';
import { describeMachine, isSkipped } from './stats.js';

/** 12345 -> "12345", 97.31 -> "97.3", 1.234 -> "1.23" */
function fmt(v: number): string {
  const a = Math.abs(v);
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

function figure(value: number | null, range: [number, number] | null, unit: BenchRow['unit']): string {
  if (value === null) return '–';
  const suffix = unit === 'MiB' ? ' MiB' : '';
  return range && range[0] !== range[1] ? `${fmt(value)} [${fmt(range[0])}–${fmt(range[1])}]${suffix}` : `${fmt(value)}${suffix}`;
}

export function formatBench(r: BenchResult): string {
  const s = r.settings;
  const out: string[] = [];
  out.push(`visplay-native bench ${r.version}, ${r.date.slice(0, 16).replace('T', ' ')} UTC${s.quick ? ' (--quick)' : ''}`);
  out.push(`machine: ${describeMachine(r.machine)}`);
  out.push(`model: ${r.model.tiny ? 'the embedded tiny model (random weights), ' : ''}${basename(r.model.modelPath)} + ${basename(r.model.mmprojPath)}`);
  out.push(`medians of ${s.repeats} run${s.repeats === 1 ? '' : 's'} after a warm-up [min–max]; ours/peer: tokens/s above 1 = we are faster, MiB below 1 = we use less`);
  if (r.load.busy) {
    out.push(`WARNING: the machine was busy (1-minute load average ${r.load.start.toFixed(1)} at the start, ${r.load.end.toFixed(1)} at the end, `
      + `${r.machine.cores} cores): other processes took CPU time from ours and the peers alike, so figures are unreliable; rerun on an idle machine.`);
  }
  out.push('');
  out.push('| section | measurement | P | visplay-native | peer | peer figure | ours/peer |');
  out.push('|---|---|---:|---:|---|---:|---:|');
  for (const row of r.rows) {
    const peer = row.skipped !== null ? `skipped: ${row.skipped}` : figure(row.peerValue, row.peerRange, row.unit);
    out.push(`| ${row.section} | ${row.metric} | ${row.parallel ?? ''} | ${figure(row.ours, row.oursRange, row.unit)} | ${row.peer} | ${peer} | ${row.ratio === null ? '–' : row.ratio.toFixed(2)} |`);
  }
  out.push('');
  const encodes = r.imageEncodes.map((c) => `P=${c.parallel} ${c.imageEncodes.join('/') || '–'} for ${c.distinctImages}${c.match ? '' : ' MISMATCH'}`);
  out.push(`image encodes per round (must equal the distinct images): ${encodes.join(', ')}${r.imageEncodesMatch ? ': all match' : ': MISMATCH, images were encoded more than once'}`);
  out.push('');
  out.push('workloads:');
  out.push(`- text prompt: ${s.text.promptTokens} tokens shared by P sequences, ${s.text.generatedTokens} generated each, as llama-batched-bench -pps; `
    + 'generated tokens/s over the decode steps (its S_TG), prompt tokens/s over the one prefill (its S_PP).');
  const promptTokens = r.rollouts.map((l) => l.image.ours.promptTokens).find((n) => n > 0);
  const serverTokens = r.rollouts.map((l) => (isSkipped(l.image.server) ? 0 : l.image.server.promptTokens)).find((n) => n > 0);
  out.push(`- image prompts: per round ceil(P/${s.image.samplesPerImage}) new ${s.image.size}x${s.image.size} images, min(P, ${s.image.samplesPerImage}) samples each, `
    + `${s.image.generatedTokens} tokens each, T = 1 over the full vocabulary; prompt ${promptTokens ?? '?'} tokens with the image`
    + `${serverTokens ? ` (llama-server counts ${serverTokens})` : ''}. Ours in one call (each image encoded once, each prompt evaluated once `
    + 'and shared); llama-server gets one HTTP request per sequence, all at once, with P slots. End to end: generated tokens / round wall time; '
    + 'prompt tokens as requested (every sequence\'s) / encode + prefill time. Ours also returns every token\'s log-prob; the server is asked for none.');
  if (!isSkipped(r.trainStep)) {
    const t = r.trainStep;
    const torch = isSkipped(t.pytorch) ? '' : `; PyTorch ${t.pytorch.torch} on the CPU (BLAS: ${t.pytorch.blas})`;
    out.push(`- GRPO train step: G = ${t.group} responses x ${t.responseLength} tokens after a ${t.promptTokens}-token image prompt, LoRA rank ${t.rank} `
      + `on all 7 modules, KL on; trained tokens/s = G x L / step time${torch}.`);
  }
  out.push('- peak RSS: ours per phase (model loaded + engines / + training), each peer process\'s VmHWM (largest over its runs).');
  out.push(`total ${r.wallSeconds.toFixed(0)} s`);
  return `${out.join('\n')}\n`;
}
