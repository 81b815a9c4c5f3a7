#!/usr/bin/env bash
# Builds Toxiproxy v2.5.0 (a TCP proxy that injects latency, resets, black holes and
# bandwidth limits) into .cache/bin/toxiproxy-server for the network-fault tests in
# test/faults. The version is pinned by tools/toxiproxy/go.mod and go.sum (its `tool`
# line names upstream's cmd/server), so every machine builds the same server. Idempotent.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/.cache/bin/toxiproxy-server"
stamp="$root/.cache/bin/toxiproxy-server.stamp"
want="$(cat "$root/tools/toxiproxy/go.mod" "$root/tools/toxiproxy/go.sum" "$0" | sha256sum | cut -d' ' -f1)"
if [[ -x "$out" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
# Go lives in /usr/local/go on these machines; a non-login shell may not have it on PATH.
export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "build-toxiproxy: Go is needed to build Toxiproxy" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
echo "build-toxiproxy: building Toxiproxy..." >&2
cd "$root/tools/toxiproxy"
# Upstream's release build stamps the version the same way; without it the server says "git".
CGO_ENABLED=0 go build -trimpath -ldflags "-X github.com/Shopify/toxiproxy/v2.Version=2.5.0" \
  -o "$out" github.com/Shopify/toxiproxy/v2/cmd/server
echo "$want" > "$stamp"
echo "build-toxiproxy: $out" >&2
