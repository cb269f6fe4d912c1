#!/usr/bin/env node
// Reads a trace written by libxtrace.so (trace.cc) and prints, per CUDA graph (in order of first
// launch): the replays' spans (first kernel start → last kernel end), then for the median replay
// each kernel's share of the critical path — "marginal" = its end minus the previous kernel's end,
// what the replay would lose without it when kernels run back to back — summed by kernel name,
// and (with --nodes) kernel by kernel.
//   node tools/cupti-trace/report.mjs trace.csv [--nodes] [--graph N]
import { readFileSync } from 'node:fs';

const args = process.argv.slice(2);
const file = args.find((a) => !a.startsWith('--'));
if (!file) {
  console.error('usage: report.mjs <trace.csv> [--nodes] [--graph N]');
  process.exit(2);
}
const showNodes = args.includes('--nodes');
const gi = args.indexOf('--graph');
const onlyGraph = gi >= 0 ? Number(args[gi + 1]) : undefined;

const launches = new Map(); // `${graph}:${correlation}` -> kernels
const graphOrder = [];
let base; // the first timestamp: times become Number nanoseconds after it
for (const line of readFileSync(file, 'utf8').split('\n')) {
  if (!line) continue;
  const f = line.split(',');
  base ??= BigInt(f[0]);
  const [start, end] = [Number(BigInt(f[0]) - base), Number(BigInt(f[1]) - base)];
  const graph = Number(f[2]);
  if (graph === 0) continue; // not part of a graph replay
  const key = `${graph}:${f[4]}`;
  if (!launches.has(key)) {
    launches.set(key, []);
    if (!graphOrder.includes(graph)) graphOrder.push(graph);
  }
  launches.get(key).push({
    start,
    end,
    node: f[3],
    grid: f[6],
    smem: f[8],
    regs: f[9],
    name: f.slice(10).join(','),
  });
}

const short = (n) => (n.length > 48 ? `${n.slice(0, 45)}...` : n);
const us = (ns) => (ns / 1e3).toFixed(2);
graphOrder.forEach((graph, gIndex) => {
  if (onlyGraph !== undefined && onlyGraph !== gIndex) return;
  const reps = [...launches.entries()]
    .filter(([k]) => k.startsWith(`${graph}:`))
    .map(([, ks]) => ks.sort((a, b) => a.start - b.start));
  const span = (ks) => ks.reduce((m, k) => Math.max(m, k.end), 0) - ks[0].start;
  const spans = reps.map(span).sort((a, b) => a - b);
  const mid = spans[Math.floor(spans.length / 2)];
  const rep = reps.find((r) => span(r) === mid);
  console.log(
    `\n## graph ${gIndex} (id ${graph}): ${reps.length} replays, ${rep.length} kernels, span us min ${us(spans[0])} median ${us(mid)} max ${us(spans[spans.length - 1])}`,
  );
  const byName = new Map();
  let prevEnd = rep[0].start;
  const rows = [];
  for (const k of rep) {
    const marginal = k.end - prevEnd;
    const wait = k.start - prevEnd; // negative: started before the previous kernel ended
    rows.push({ ...k, marginal, wait });
    if (k.end > prevEnd) prevEnd = k.end;
    const e = byName.get(k.name) ?? { n: 0, marginal: 0, dur: 0 };
    e.n++;
    e.marginal += marginal;
    e.dur += k.end - k.start;
    byName.set(k.name, e);
  }
  console.log('| kernel | count | marginal us (sum) | marginal us (mean) | duration us (mean) |');
  console.log('| --- | ---: | ---: | ---: | ---: |');
  for (const [name, e] of [...byName.entries()].sort((a, b) =>
    a[1].marginal > b[1].marginal ? -1 : 1,
  )) {
    console.log(
      `| ${short(name)} | ${e.n} | ${us(e.marginal)} | ${(e.marginal / e.n / 1e3).toFixed(2)} | ${(e.dur / e.n / 1e3).toFixed(2)} |`,
    );
  }
  if (showNodes) {
    console.log(
      '\n| # | kernel | grid | smem | regs | start-prev end us | duration us | marginal us |',
    );
    console.log('| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |');
    rows.forEach((r, i) => {
      console.log(
        `| ${i} | ${short(r.name)} | ${r.grid} | ${r.smem} | ${r.regs} | ${us(r.wait)} | ${us(r.end - r.start)} | ${us(r.marginal)} |`,
      );
    });
  }
});
