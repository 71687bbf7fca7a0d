// Number formats for the CLI's human-readable output (JSON output keeps raw numbers).

/** 4683075584 -> "4.36 GiB" */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(2)} ${units[unit]}`;
}

/** 7615616512 -> "7.62 B", 1234567 -> "1.23 M", 999 -> "999" */
export function formatCount(count: number): string {
  if (count >= 1e9) return `${(count / 1e9).toFixed(2)} B`;
  if (count >= 1e6) return `${(count / 1e6).toFixed(2)} M`;
  if (count >= 1e3) return `${(count / 1e3).toFixed(2)} K`;
  return String(count);
}

/** [{Q4_K, 0.71}, {Q6_K, 0.17}, ...] -> "Q4_K 71%, Q6_K 17%, F32 12%" (the largest `limit`). */
export function formatShares(shares: ReadonlyArray<{ type: string; share: number }>, limit = 4): string {
  const shown = shares.slice(0, limit).map((s) => `${s.type} ${Math.round(s.share * 100)}%`);
  if (shares.length > limit) shown.push(`+${shares.length - limit} more`);
  return shown.join(', ');
}

/** Aligned "label  value" lines, skipping null values. */
export function formatFields(fields: ReadonlyArray<readonly [string, string | number | null]>, indent = '  '): string {
  const present = fields.filter(([, value]) => value !== null);
  const width = Math.max(0, ...present.map(([label]) => label.length));
  return present.map(([label, value]) => `${indent}${label.padEnd(width)}  ${value}`).join('\n');
}

/** 1 -> "1 tensor", 3 -> "3 tensors" */
export function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? '' : 's'}`;
}
