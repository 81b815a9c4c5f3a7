#!/usr/bin/env bash
# Stages what the production image runs into DEST (after `pnpm build`): each
# workspace package's package.json, dist/ and bin/, the compiled demo receiver,
# and the production dependencies of the API, the worker, the CLI and the receiver SDK (the demo receiver runs on it) (the `...`
# suffix takes their workspace dependencies too), installed offline from the
# pnpm store the build already filled. The Dockerfile copies DEST into the image;
# test/ops/built-output.test.ts runs the API and the worker from it with plain node.
#
#   ./scripts/stage-image.sh /tmp/stage && du -sh /tmp/stage
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:?usage: scripts/stage-image.sh DEST}
mkdir -p "$dest/scripts"
cp package.json pnpm-lock.yaml pnpm-workspace.yaml "$dest/"
# Local fixes to dependencies (pnpm-workspace.yaml `patchedDependencies`); the install needs them.
cp -r patches "$dest/"
for d in apps/* packages/*; do
  [[ -f "$d/package.json" ]] || continue
  mkdir -p "$dest/$d"
  cp "$d/package.json" "$dest/$d/"
  for sub in dist bin; do
    if [[ -d "$d/$sub" ]]; then cp -r "$d/$sub" "$dest/$d/"; fi
  done
done
cp scripts/dist/demo-receiver.js "$dest/scripts/"
cd "$dest"
CI=1 pnpm install --prod --frozen-lockfile --offline --reporter=append-only \
  --filter "@connect/api..." --filter "@connect/worker..." --filter "@connect/cli..." --filter "@connect/receiver..." >&2
# TypeScript is an optional peer of a dashboard dependency (types only, never
# loaded at run time): its 23 MB need not ship.
rm -rf node_modules/.pnpm/typescript@*
# The demo receiver (scripts/demo-receiver.js) runs on the receiver SDK, but the
# root package, where Node looks for it, lists workspace packages as dev
# dependencies only: link it where Node's resolution from scripts/ finds it.
mkdir -p node_modules/@connect && ln -sfn ../../packages/receiver node_modules/@connect/receiver
find . -name '*.map' -delete
