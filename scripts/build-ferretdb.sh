#!/usr/bin/env bash
# Builds FerretDB v1.24.2 (MongoDB wire protocol on PostgreSQL) into .cache/bin/ferretdb
# from the project's own Go module in tools/ferretdb (see the comment in its main.go
# for why `go install` of the upstream command does not work). Idempotent.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/.cache/bin/ferretdb"
stamp="$root/.cache/bin/ferretdb.stamp"
want="$(cat "$root/tools/ferretdb/go.mod" "$root/tools/ferretdb/go.sum" "$root/tools/ferretdb/main.go" | sha256sum | cut -d' ' -f1)"
if [[ -x "$out" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
# Go lives in /usr/local/go on these machines; a non-login shell may not have it on PATH.
export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "build-ferretdb: Go is needed to build FerretDB (no MongoDB here)" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
echo "build-ferretdb: building FerretDB (first time takes a minute or two)..." >&2
cd "$root/tools/ferretdb"
CGO_ENABLED=0 go build -trimpath -tags ferretdb_no_sqlite -o "$out" .
echo "$want" > "$stamp"
echo "build-ferretdb: $out" >&2
