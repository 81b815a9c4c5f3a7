#!/usr/bin/env bash
# Builds FerretDB v1.24.2 (MongoDB wire protocol on PostgreSQL) into .cache/bin/ferretdb
# from the project's own Go module in tools/ferretdb (see the comment in its main.go
# for why `go install` of the upstream command does not work). Idempotent.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/.cache/bin/ferretdb"
stamp="$root/.cache/bin/ferretdb.stamp"
want="$(cat "$root/tools/ferretdb/go.mod" "$root/tools/ferretdb/go.sum" "$root/tools/ferretdb/"*.go "$root/tools/ferretdb/patches/"*.patch | sha256sum | cut -d' ' -f1)"
if [[ -x "$out" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
# Go lives in /usr/local/go on these machines; a non-login shell may not have it on PATH.
export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "build-ferretdb: Go is needed to build FerretDB (no MongoDB here)" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
echo "build-ferretdb: building FerretDB (first time takes a minute or two)..." >&2
cd "$root/tools/ferretdb"
# Our fixes to upstream files (tools/ferretdb/patches/*.patch, unified diffs against the
# module; each change marked "Patched for Connect Provisioning"): the module is copied out of
# Go's module cache (read-only, and go build refuses overlays there), the diffs are applied
# to the copy, and the build uses a scratch go.mod that replaces the module with the copy.
# go.mod itself is untouched.
go mod download github.com/FerretDB/FerretDB
upstream="$(go list -m -f '{{.Dir}}' github.com/FerretDB/FerretDB)"
src="$root/.cache/ferretdb-src"
rm -rf "$src" && cp -r "$upstream" "$src" && chmod -R u+w "$src"
command -v patch >/dev/null || { echo "build-ferretdb: the patch command is needed (Debian package patch)" >&2; exit 1; }
for diff in "$root/tools/ferretdb/patches/"*.patch; do
  patch --quiet --forward --strip=1 --directory="$src" < "$diff"
done
modfile="$root/.cache/ferretdb-build.mod"
cp go.mod "$modfile" && cp go.sum "${modfile%.mod}.sum"
go mod edit -modfile="$modfile" -replace "github.com/FerretDB/FerretDB=$src"
CGO_ENABLED=0 go build -trimpath -modfile="$modfile" -tags ferretdb_no_sqlite -o "$out" .
echo "$want" > "$stamp"
echo "build-ferretdb: $out" >&2
