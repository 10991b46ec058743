#!/usr/bin/env bash
# Build (or reuse) the local node: kubelet, kube-proxy and kube-scheduler (the control
# plane's Kubernetes module, tools/controlplane/k8s), containerd + its runc shim + ctr,
# runc, the CNI plugins bridge/host-local/loopback/portmap, and the two programs of the
# node's local images (pause, nettest), all from Go modules. Output is cached outside the
# repository, keyed by the pinned versions (and a hash of the image sources):
#   ${VECTORSCHEMA_CACHE:-~/.cache/vectorschema}/node-k8s-<k8s>-containerd-<v>-runc-<v>-cni-<v>/
#     {kubelet,kube-proxy,kube-scheduler,containerd,containerd-shim-runc-v2,ctr,runc}
#     cni/{bridge,host-local,loopback,portmap}
#     images-<hash>/{pause,nettest}   (tools/devenv/nodeconfig.py computes the same hash)
# A warm cache means no rebuild. Prints the bin directory as its last line.
#
# runc needs cgo and libseccomp (Debian's libseccomp-dev); the node needs iptables at run
# time (kube-proxy, our FORWARD rule). Missing Debian packages are installed here with
# apt-get when running as root; otherwise the script says what to install.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
K8S_DIR="$HERE/../controlplane/k8s"
version_of() { awk -v m="$2" '$1 == "require" && $2 == m {print $3}' "$1"; }
K8S_VERSION="$(version_of "$K8S_DIR/go.mod" k8s.io/kubernetes)"
CONTAINERD_VERSION="$(version_of "$HERE/containerd/go.mod" github.com/containerd/containerd/v2)"
RUNC_VERSION="$(version_of "$HERE/runc/go.mod" github.com/opencontainers/runc)"
CNI_VERSION="$(version_of "$HERE/cni/go.mod" github.com/containernetworking/plugins)"
IMAGES_HASH="$(cd "$HERE/images" && cat go.mod pause/main.go nettest/main.go | sha256sum | cut -c1-12)"
CACHE="${VECTORSCHEMA_CACHE:-$HOME/.cache/vectorschema}"
BIN="$CACHE/node-k8s-$K8S_VERSION-containerd-$CONTAINERD_VERSION-runc-$RUNC_VERSION-cni-$CNI_VERSION"
IMAGES="$BIN/images-$IMAGES_HASH"
BINARIES=(kubelet kube-proxy kube-scheduler containerd containerd-shim-runc-v2 ctr runc
  cni/bridge cni/host-local cni/loopback cni/portmap "images-$IMAGES_HASH/pause"
  "images-$IMAGES_HASH/nettest")
DEBIAN_PACKAGES=(libseccomp-dev pkg-config gcc libc6-dev iptables)

fail() { echo "node: $*" >&2; exit 1; }

all_built() {
  for b in "${BINARIES[@]}"; do [ -x "$BIN/$b" ] || return 1; done
}

missing_packages() {
  local p
  for p in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"
  done
}

ensure_packages() {
  local missing
  missing="$(missing_packages | tr '\n' ' ')"
  [ -z "${missing// /}" ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    fail "missing Debian packages: $missing(install them with apt-get as root, or run this as root)"
  fi
  echo "node: apt-get install $missing" >&2
  # shellcheck disable=SC2086
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing; } >>"$LOG" 2>&1 \
    || { tail -n 20 "$LOG" >&2; fail "apt-get install $missing failed (see $LOG)"; }
}

if all_built && [ -z "$(missing_packages)" ]; then
  echo "$BIN"
  exit 0
fi

command -v go >/dev/null 2>&1 || fail "Go is not installed: install Go 1.26 or newer (https://go.dev/doc/install) and re-run."
GOV="$(go env GOVERSION 2>/dev/null | sed 's/^go//')"
major="${GOV%%.*}"; rest="${GOV#*.}"; minor="${rest%%.*}"
if [ "${major:-0}" -lt 1 ] || { [ "$major" -eq 1 ] && [ "${minor:-0}" -lt 26 ]; }; then
  fail "Go $GOV is too old: the node's components need Go 1.26 or newer."
fi

mkdir -p "$BIN/cni" "$IMAGES"
LOG="$BIN/build.log"
: >"$LOG"
ensure_packages
echo "node: building kubelet/kube-proxy/kube-scheduler $K8S_VERSION, containerd $CONTAINERD_VERSION, runc $RUNC_VERSION, CNI plugins $CNI_VERSION into $BIN (log: $LOG)" >&2
T0=$SECONDS

K8S_LDFLAGS="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION \
 -X k8s.io/component-base/version.gitMajor=1 \
 -X k8s.io/component-base/version.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2) \
 -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
CONTAINERD_LDFLAGS="-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION \
 -X github.com/containerd/containerd/v2/version.Package=github.com/containerd/containerd/v2"
RUNC_LDFLAGS="-s -w -X main.version=${RUNC_VERSION#v}"
CNI_LDFLAGS="-s -w -X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=$CNI_VERSION"

build() { # dir pkg out cgo tags ldflags
  local dir="$1" pkg="$2" out="$3" cgo="$4" tags="$5" ldflags="$6"
  [ -x "$BIN/$out" ] && return 0
  echo "node: go build $pkg" >&2
  if ! (cd "$dir" && CGO_ENABLED="$cgo" nice -n 10 go build -trimpath -tags "$tags" \
        -ldflags "$ldflags" -o "$BIN/$out.tmp" "$pkg") >>"$LOG" 2>&1; then
    tail -n 20 "$LOG" >&2
    fail "building $out failed (see $LOG)."
  fi
  mv "$BIN/$out.tmp" "$BIN/$out"
}

build "$HERE/images" ./pause "images-$IMAGES_HASH/pause" 0 "" "-s -w"
build "$HERE/images" ./nettest "images-$IMAGES_HASH/nettest" 0 "" "-s -w"
for p in main/bridge ipam/host-local main/loopback meta/portmap; do
  build "$HERE/cni" "github.com/containernetworking/plugins/plugins/$p" "cni/${p#*/}" 0 "" "$CNI_LDFLAGS"
done
build "$HERE/runc" github.com/opencontainers/runc runc 1 "seccomp urfave_cli_no_docs" "$RUNC_LDFLAGS"
for c in containerd containerd-shim-runc-v2 ctr; do
  build "$HERE/containerd" "github.com/containerd/containerd/v2/cmd/$c" "$c" 0 "urfave_cli_no_docs" "$CONTAINERD_LDFLAGS"
done
for c in kube-scheduler kube-proxy kubelet; do
  build "$K8S_DIR" "k8s.io/kubernetes/cmd/$c" "$c" 0 "" "$K8S_LDFLAGS"
done

all_built || fail "build finished but binaries are missing in $BIN"
echo "node: built in $((SECONDS - T0)) s" >&2
echo "$BIN"
