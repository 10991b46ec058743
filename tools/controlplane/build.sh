#!/usr/bin/env bash
# Build (or reuse) the local control plane: kube-apiserver, kube-controller-manager and
# etcd, from Go modules only. Output is cached outside the repository, keyed by version:
#   ${VECTORSCHEMA_CACHE:-~/.cache/vectorschema}/k8s-<k8s>-etcd-<etcd>/{kube-apiserver,...}
# A warm cache means no rebuild. Prints the bin directory as its last line.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
K8S_VERSION="$(awk '/^require k8s.io\/kubernetes /{print $3}' "$HERE/k8s/go.mod")"
ETCD_VERSION="$(awk '/^require go.etcd.io\/etcd\/server\/v3 /{print $3}' "$HERE/etcd/go.mod")"
CACHE="${VECTORSCHEMA_CACHE:-$HOME/.cache/vectorschema}"
BIN="$CACHE/k8s-$K8S_VERSION-etcd-$ETCD_VERSION"
BINARIES=(kube-apiserver kube-controller-manager etcd)

fail() { echo "controlplane: $*" >&2; exit 1; }

all_built() {
  for b in "${BINARIES[@]}"; do [ -x "$BIN/$b" ] || return 1; done
}

if all_built; then
  echo "$BIN"
  exit 0
fi

command -v go >/dev/null 2>&1 || fail "Go is not installed: install Go 1.26 or newer (https://go.dev/doc/install) and re-run."
GOV="$(go env GOVERSION 2>/dev/null | sed 's/^go//')"
major="${GOV%%.*}"; rest="${GOV#*.}"; minor="${rest%%.*}"
if [ "${major:-0}" -lt 1 ] || { [ "$major" -eq 1 ] && [ "${minor:-0}" -lt 26 ]; }; then
  fail "Go $GOV is too old: kube-apiserver $K8S_VERSION needs Go 1.26 or newer."
fi

mkdir -p "$BIN"
LOG="$BIN/build.log"
: >"$LOG"
echo "controlplane: building Kubernetes $K8S_VERSION and etcd $ETCD_VERSION into $BIN (first build: about 7 minutes on 2 cores, module downloads included; log: $LOG)" >&2

minor_of() { echo "$1" | cut -d. -f2; }
LDFLAGS="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION \
 -X k8s.io/component-base/version.gitMajor=1 \
 -X k8s.io/component-base/version.gitMinor=$(minor_of "$K8S_VERSION") \
 -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"

build() { # dir pkg out
  local dir="$1" pkg="$2" out="$3"
  [ -x "$BIN/$out" ] && return 0
  echo "controlplane: go build $pkg" >&2
  if ! (cd "$HERE/$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "$LDFLAGS" -o "$BIN/$out.tmp" "$pkg") >>"$LOG" 2>&1; then
    tail -n 20 "$LOG" >&2
    fail "building $out failed (see $LOG)."
  fi
  mv "$BIN/$out.tmp" "$BIN/$out"
}

build etcd go.etcd.io/etcd/server/v3 etcd
build k8s k8s.io/kubernetes/cmd/kube-apiserver kube-apiserver
build k8s k8s.io/kubernetes/cmd/kube-controller-manager kube-controller-manager

all_built || fail "build finished but binaries are missing in $BIN"
echo "$BIN"
