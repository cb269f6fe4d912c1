/** Where weight loading stands: bytes of this rank's share read so far, and of how many. */
export interface LoadProgress {
  /** The tensor just finished. */
  tensor: string;
  /** Tensors done and in total. */
  done: number;
  count: number;
  /** Checkpoint bytes read (this rank's slices only) and to read. */
  loadedBytes: number;
  totalBytes: number;
}

/** Minimal surface of a terminal stream (process.stderr). */
export interface ProgressSink {
  write(text: string): unknown;
  columns?: number;
}

/**
 * A one-line progress bar redrawn in place (carriage return), at most every `intervalMs`, and
 * always at the end, where it finishes the line.
 */
export function progressBar(
  sink: ProgressSink,
  label = 'Loading weights',
  intervalMs = 100,
): (p: LoadProgress) => void {
  let last = 0;
  const started = Date.now();
  return (p) => {
    const now = Date.now();
    const finished = p.done === p.count;
    if (!finished && now - last < intervalMs) return;
    last = now;
    const frac = p.totalBytes === 0 ? 1 : p.loadedBytes / p.totalBytes;
    const width = Math.max(10, Math.min(40, (sink.columns ?? 80) - 60));
    const filled = Math.round(frac * width);
    const secs = ((now - started) / 1000).toFixed(1);
    const line =
      `${label} [${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${(frac * 100).toFixed(0).padStart(3)}% ` +
      `${formatBytes(p.loadedBytes)}/${formatBytes(p.totalBytes)} ${p.done}/${p.count} tensors ${secs}s`;
    sink.write(`\r${line}${finished ? '\n' : ''}`);
  };
}

/** 1536 → "1.5 KB" (powers of 1024, one decimal). */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${u === 0 ? v : v.toFixed(1)} ${units[u]}`;
}
