#!/usr/bin/env bash
# Build (or reuse) the kstatus checker: prints the binary's path as its last line.
# Cached outside the repository, keyed by the cli-utils version in go.mod.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VERSION="$(awk '$1 == "sigs.k8s.io/cli-utils" {print $2}' "$HERE/go.mod")"
OUT="${VECTORSCHEMA_CACHE:-$HOME/.cache/vectorschema}/kstatus-$VERSION/kstatus"
if [ ! -x "$OUT" ]; then
  command -v go >/dev/null 2>&1 || { echo "kstatus: Go is not installed (Go 1.26+ needed)" >&2; exit 1; }
  mkdir -p "$(dirname "$OUT")"
  (cd "$HERE" && CGO_ENABLED=0 go build -trimpath -o "$OUT.tmp" .) >&2
  mv "$OUT.tmp" "$OUT"
fi
echo "$OUT"
