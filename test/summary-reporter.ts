import type { Reporter, SerializedError, TestModule } from 'vitest/node';

/**
 * Prints one plain closing line, `tests: N passed, N failed, N skipped`, after
 * vitest's own summary, so CI (which reads that form) counts the run.
 *
 * A file can fail without any of its tests failing: it does not load, a
 * `beforeAll` throws (its tests are then skipped), or an `afterAll` assertion
 * fails after every test passed. Each such file counts as one failure, and so
 * does each error vitest caught outside any test; otherwise the line CI reads
 * says "0 failed" for a red run.
 */
export function summarize(testModules: ReadonlyArray<TestModule>, unhandledErrors: ReadonlyArray<SerializedError> = []): { passed: number; failed: number; skipped: number } {
  let passed = 0;
  let failed = unhandledErrors.length;
  let skipped = 0;
  for (const mod of testModules) {
    let failedInFile = 0;
    for (const test of mod.children.allTests()) {
      const state = test.result().state;
      if (state === 'passed') passed++;
      else if (state === 'failed') failedInFile++;
      else skipped++;
    }
    // The file failed for a reason no test carries (load error, a hook, a suite-level error).
    if (failedInFile === 0 && (mod.state() === 'failed' || mod.errors().length > 0)) failedInFile = 1;
    failed += failedInFile;
  }
  return { passed, failed, skipped };
}

export default class SummaryReporter implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>, unhandledErrors: ReadonlyArray<SerializedError>): void {
    const { passed, failed, skipped } = summarize(testModules, unhandledErrors);
    process.stdout.write(`\ntests: ${passed} passed, ${failed} failed, ${skipped} skipped\n`);
  }
}
