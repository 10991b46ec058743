#!/usr/bin/env bash
# Build (or reuse) helm from the Go module proxy: prints the binary's path as its last line.
# Cached outside the repository, keyed by the helm version pinned in go.mod, like
# tools/controlplane/build.sh and tools/kstatus/build.sh.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VERSION="$(awk '$1 == "helm.sh/helm/v3" {print $2} $1 == "require" && $2 == "helm.sh/helm/v3" {print $3}' "$HERE/go.mod")"
# The Kubernetes minor helm reports to charts (.Capabilities) and lints against: that of
# the client-go it is built with, as helm's own Makefile stamps it.
K8S_MINOR="$(awk '$1 == "k8s.io/client-go" {print $2}' "$HERE/go.mod" | cut -d. -f2)"
OUT="${VECTORSCHEMA_CACHE:-$HOME/.cache/vectorschema}/helm-$VERSION/helm"
if [ ! -x "$OUT" ]; then
  command -v go >/dev/null 2>&1 || { echo "helm: Go is not installed (Go 1.26+ needed)" >&2; exit 1; }
  mkdir -p "$(dirname "$OUT")"
  echo "helm: building helm $VERSION into $(dirname "$OUT") (first build: a few minutes)" >&2
  LDFLAGS="-s -w -X helm.sh/helm/v3/internal/version.version=$VERSION \
 -X helm.sh/helm/v3/internal/version.gitTreeState=clean \
 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 \
 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$K8S_MINOR \
 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 \
 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$K8S_MINOR"
  (cd "$HERE" && CGO_ENABLED=0 go build -trimpath -ldflags "$LDFLAGS" -o "$OUT.tmp" helm.sh/helm/v3/cmd/helm) >&2
  mv "$OUT.tmp" "$OUT"
fi
echo "$OUT"
