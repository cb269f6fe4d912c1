#!/usr/bin/env node
// Reads a trace written by libxtrace.so (trace.cc) and prints, per CUDA graph (in order of first
// launch): the replays' spans (first kernel start → last kernel end), then for the median replay
// each kernel's share of the critical path — "marginal" = its end minus the previous kernel's end,
// what the replay would lose without it when kernels run back to back — summed by kernel name,
// and (with --nodes) kernel by kernel. With --between: what runs between consecutive replays of
// the most replayed graph (kernels and copies outside graphs: a pipelined step's sampling, input
// and result copies), each with its median duration and the median idle time before it.
//   node tools/cupti-trace/report.mjs trace.csv [--nodes] [--graph N] [--between]
import { readFileSync } from 'node:fs';

const args = process.argv.slice(2);
const file = args.find((a) => !a.startsWith('--'));
if (!file) {
  console.error('usage: report.mjs <trace.csv> [--nodes] [--graph N] [--between]');
  process.exit(2);
}
const showNodes = args.includes('--nodes');
const gi = args.indexOf('--graph');
const onlyGraph = gi >= 0 ? Number(args[gi + 1]) : undefined;

const launches = new Map(); // `${graph}:${correlation}` -> kernels
const graphOrder = [];
const outside = []; // kernels and copies of no graph
let base; // the first timestamp: times become Number nanoseconds after it
for (const line of readFileSync(file, 'utf8').split('\n')) {
  if (!line) continue;
  const f = line.split(',');
  base ??= BigInt(f[0]);
  const [start, end] = [Number(BigInt(f[0]) - base), Number(BigInt(f[1]) - base)];
  const graph = Number(f[2]);
  if (graph === 0) {
    outside.push({ start, end, name: f.slice(10).join(',') });
    continue;
  }
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

if (args.includes('--between')) {
  // Replays of the most replayed graph, in time order; the items strictly between two of them.
  const counts = graphOrder.map(
    (g) => [...launches.keys()].filter((k) => k.startsWith(`${g}:`)).length,
  );
  const graph = graphOrder[counts.indexOf(Math.max(...counts))];
  const reps = [...launches.entries()]
    .filter(([k]) => k.startsWith(`${graph}:`))
    .map(([, ks]) => ({
      start: Math.min(...ks.map((k) => k.start)),
      end: Math.max(...ks.map((k) => k.end)),
    }))
    .sort((a, b) => a.start - b.start);
  const items = outside.sort((a, b) => a.start - b.start);
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const stats = new Map();
  const intervals = [];
  let j = 0;
  for (let i = 1; i < reps.length; i++) {
    const [a, b] = [reps[i - 1], reps[i]];
    while (j < items.length && items[j].start < a.end) j++;
    let prev = a.end;
    for (let k = j; k < items.length && items[k].end <= b.start; k++) {
      const it = items[k];
      const e = stats.get(it.name) ?? { dur: [], gap: [] };
      e.dur.push(it.end - it.start);
      e.gap.push(it.start - prev);
      stats.set(it.name, e);
      prev = Math.max(prev, it.end);
    }
    intervals.push({ between: b.start - a.end, tail: b.start - prev });
  }
  const real = intervals.filter((x) => x.between < 1e6); // drop pauses between bench sections
  console.log(
    `\n## between replays of graph ${graphOrder.indexOf(graph)} (id ${graph}): ${real.length} intervals, median ${us(median(real.map((x) => x.between)))} us from one replay's end to the next's start`,
  );
  console.log('| item | count | median duration us | median idle before us |');
  console.log('| --- | ---: | ---: | ---: |');
  for (const [name, e] of stats) {
    console.log(
      `| ${short(name)} | ${e.dur.length} | ${us(median(e.dur))} | ${us(median(e.gap))} |`,
    );
  }
  console.log(
    `| (idle before the next replay) | ${real.length} | — | ${us(median(real.map((x) => x.tail)))} |`,
  );
}
