#!/usr/bin/env bash
# Build (or reuse) the Argo CD health harness (gopher-lua, the interpreter Argo CD runs):
# prints the binary's path as its last line. Cached outside the repository, keyed by the
# gopher-lua version in go.mod and a hash of the harness's source.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VERSION="$(awk '$1 == "github.com/yuin/gopher-lua" {print $2} $1 == "require" && $2 == "github.com/yuin/gopher-lua" {print $3}' "$HERE/go.mod")"
SRC="$(cat "$HERE/main.go" "$HERE/go.sum" | sha256sum | cut -c1-12)"
OUT="${VECTORSCHEMA_CACHE:-$HOME/.cache/vectorschema}/argocdhealth-$VERSION-$SRC/argocdhealth"
if [ ! -x "$OUT" ]; then
  command -v go >/dev/null 2>&1 || { echo "argocdhealth: Go is not installed (Go 1.26+ needed)" >&2; exit 1; }
  mkdir -p "$(dirname "$OUT")"
  (cd "$HERE" && CGO_ENABLED=0 go build -trimpath -o "$OUT.tmp" .) >&2
  mv "$OUT.tmp" "$OUT"
fi
echo "$OUT"
