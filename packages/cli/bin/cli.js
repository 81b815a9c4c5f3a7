#!/usr/bin/env node
// `pnpm cli ...` runs this binary, not a package.json script: pnpm prints its
// "> pkg@ script" banner on stdout for scripts, which would break the
// one-JSON-document-on-stdout rule; for a binary it prints nothing.
// In the repository it runs the TypeScript sources through tsx; where tsx is not
// installed (the production image) it runs the build (dist/).
let tsx;
try {
  tsx = await import('tsx/esm/api');
} catch {
  tsx = undefined;
}
if (tsx) {
  tsx.register();
  await import('../src/main.ts');
} else {
  await import('../dist/main.js');
}
