/**
 * The report: one table on stdout, bench/results/latest.json and latest.md, with
 * the machine, the database it ran on, every figure as median (min–max) of its
 * rounds, and the ratios the performance issue sets targets for.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BENCH_DIR, REPO_ROOT } from './bench-child.ts';
import type { Summary } from './round-stats.ts';

export interface Meta {
  date: string;
  /** The commit measured (git rev-parse HEAD) and whether the working tree differed from it (results aside). */
  commit: { sha: string; dirty: boolean };
  mode: 'quick' | 'full' | 'smoke';
  cpus: number;
  cpuModel: string;
  node: string;
  database: string;
  /** Rounds and their length of the figures a target rests on, and of the others. */
  target: { rounds: number; roundSec: number; warmupSec: number };
  info: { rounds: number; roundSec: number; warmupSec: number };
  /** The sections that ran, in order. */
  sections: string[];
  /** From start to the report (without stopping the processes and dropping the data). */
  wallSeconds?: number;
  notes: string[];
}

export interface Row {
  group: string;
  scenario: string;
  concurrency: number | string;
  summary: Summary;
}

export interface Ratio {
  name: string;
  value: number;
  /** Spread over the rounds: lowest numerator over highest denominator, and the reverse (or a figure's min and max). */
  low?: number;
  high?: number;
  /** e.g. ">= 0.5"; undefined for a figure shown for information. */
  target?: string;
  met?: boolean;
}

export interface Memory {
  process: string;
  afterFirstMiB: number;
  afterSecondMiB: number;
  growthPct: number;
  /** The smallest heap a full GC left in each run (information: the live heap, which a leak grows). */
  liveHeapFirstMiB?: number;
  liveHeapSecondMiB?: number;
  /** Full GCs seen in each run. */
  fullGcs?: [number, number];
}

export interface Report {
  meta: Meta;
  rows: Row[];
  ratios: Ratio[];
  memory: Memory[];
}

const n = (v: number, digits = 1) => (Number.isFinite(v) ? v.toFixed(digits) : '-');
const cell = (s: Summary[keyof Summary] | number, digits = 1) =>
  typeof s === 'number' ? String(s) : s.min === s.max || !Number.isFinite(s.median) ? n(s.median, digits) : `${n(s.median, digits)} (${n(s.min, digits)}–${n(s.max, digits)})`;

function rowsTable(rows: Row[]): string[] {
  const out = [
    '| group | scenario | conc | offered/s | req/s | p50 ms | p99 ms | p99.9 ms | requests | errors | non-2xx |',
    '|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const r of rows) {
    const s = r.summary;
    out.push(
      `| ${r.group} | ${r.scenario} | ${r.concurrency} | ${cell(s.offered, 0)} | ${cell(s.rps, 0)} | ${cell(s.p50)} | ${cell(s.p99)} | ${cell(s.p999)} | ${n(s.requests.median, 0)} | ${n(s.errors.max, 0)} | ${n(s.non2xx.max, 0)} |`,
    );
  }
  return out;
}

function ratiosTable(ratios: Ratio[]): string[] {
  const out = ['| ratio | median | spread (min–max) | target | met |', '|---|---|---|---|---|'];
  const digits = (v: number) => (Math.abs(v) < 0.1 ? 3 : 2);
  for (const r of ratios)
    out.push(
      `| ${r.name} | ${n(r.value, digits(r.value))} | ${r.low === undefined ? '' : `${n(r.low!, digits(r.low!))}–${n(r.high!, digits(r.high!))}`} | ${r.target ?? '(information)'} | ${r.met === undefined ? '' : r.met ? 'yes' : '**no**'} |`,
    );
  return out;
}

function memoryTable(memory: Memory[]): string[] {
  const out = [
    '| process | peak RSS in run 1 (MiB) | peak RSS in run 2 (MiB) | growth | target < 10 % | live heap, run 1 → run 2 (MiB, smallest heap after a full GC; information) |',
    '|---|---|---|---|---|---|',
  ];
  for (const m of memory) {
    const live =
      m.liveHeapFirstMiB === undefined
        ? ''
        : `${n(m.liveHeapFirstMiB)} → ${n(m.liveHeapSecondMiB!)} (${n((m.liveHeapSecondMiB! / m.liveHeapFirstMiB - 1) * 100)} %; ${m.fullGcs![0]} and ${m.fullGcs![1]} full GCs)`;
    out.push(`| ${m.process} | ${n(m.afterFirstMiB)} | ${n(m.afterSecondMiB)} | ${n(m.growthPct)} % | ${m.growthPct < 10 ? 'yes' : '**no**'} | ${live} |`);
  }
  return out;
}

export function renderMarkdown(report: Report): string {
  const m = report.meta;
  return [
    `# Benchmark (${m.mode}${m.mode === 'smoke' ? ': every section for a moment, figures meaningless' : ''})`,
    '',
    `Commit ${m.commit.sha}${m.commit.dirty ? ' **with uncommitted changes** (not a result to commit)' : ''}`,
    '',
    `${m.date} · ${m.cpus} CPUs (${m.cpuModel}) · Node ${m.node} · database: ${m.database} · ` +
      `each figure: median (min–max) of its rounds, after an unmeasured warm-up: ${m.target.rounds} rounds of ${m.target.roundSec} s for the figures a target rests on, ${m.info.rounds} of ${m.info.roundSec} s for the others` +
      (m.wallSeconds === undefined ? '' : ` · run took ${m.wallSeconds} s`),
    '',
    `Sections run: ${m.sections.join(', ')}.`,
    '',
    ...m.notes.map((x) => `- ${x}`),
    '',
    '## Figures',
    '',
    ...rowsTable(report.rows),
    '',
    '## Ratios and targets',
    '',
    ...ratiosTable(report.ratios),
    '',
    '## Memory',
    '',
    ...memoryTable(report.memory),
    '',
  ].join('\n');
}

/**
 * The commit a run measures. Results are committed only with the commit they measured:
 * a table that predates the code it describes (the fan-out changed after the last one
 * was written) says nothing about that code. Changes under bench/results do not count.
 */
export function commitMeasured(): { sha: string; dirty: boolean } {
  const git = (...args: string[]) => execFileSync('git', args, { cwd: REPO_ROOT, encoding: 'utf8' }).trim();
  try {
    return { sha: git('rev-parse', 'HEAD'), dirty: git('status', '--porcelain', '--', '.', ':(exclude)bench/results').length > 0 };
  } catch {
    return { sha: 'unknown (not a git checkout)', dirty: true };
  }
}

export function writeReport(report: Report): string {
  const dir = join(BENCH_DIR, 'results');
  mkdirSync(dir, { recursive: true });
  const md = renderMarkdown(report);
  // A smoke run's figures mean nothing: shown, never written where a result could be committed.
  if (report.meta.mode === 'smoke') return md;
  // latest.* is the newest run of either kind; quick.* and full.* keep the newest of each.
  for (const name of ['latest', report.meta.mode]) {
    writeFileSync(join(dir, `${name}.json`), `${JSON.stringify(report, null, 2)}\n`);
    writeFileSync(join(dir, `${name}.md`), md);
  }
  return md;
}
