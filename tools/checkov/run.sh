#!/usr/bin/env bash
# `make lint`'s manifest checks: checkov (pinned in requirements.txt, installed once into
# its own virtualenv in ~/.cache/vectorschema, apart from the project's .venv whose pins it
# conflicts with) over what a cluster would receive: the chart rendered with its defaults
# and with every option on, and the kustomize base and samples overlay. Exits non-zero on
# any failed check; the skipped ones are listed, with their reasons, in config.yaml.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VERSION="$(awk -F== '$1 == "checkov" {print $2}' "$HERE/requirements.txt")"
LOCK="$(sha256sum "$HERE/requirements.txt" | cut -c1-12)"
VENV="${VECTORSCHEMA_CACHE:-$HOME/.cache/vectorschema}/checkov-$VERSION-$LOCK"
PYTHON="${PYTHON:-python3}"
if [ ! -f "$VENV/.complete" ]; then
  echo "checkov: installing checkov $VERSION into $VENV (once, about a minute)" >&2
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --no-deps -r "$HERE/requirements.txt" >&2
  touch "$VENV/.complete"
fi
HELM="$(bash "$REPO/tools/helm/build.sh")"
KUBECTL="${KUBECTL:-$REPO/.venv/bin/kubectl}"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
"$HELM" template vectorschema "$REPO/charts/vectorschema" --namespace vectorschema-system \
  >"$OUT/chart-defaults.yaml"
"$HELM" template vectorschema "$REPO/charts/vectorschema" --namespace vectorschema-system \
  --set-json 'watch={"namespaces":["tenant-a"],"namespaceSelector":"tier=gold"}' \
  --set shards.count=2 --set metrics.serviceMonitor.enabled=true \
  --set qdrant.apiKeySecret.name=qdrant-api-key \
  --set-json 'tenantQuota={"namespaces":["tenant-a"]}' >"$OUT/chart-options.yaml"
"$KUBECTL" kustomize "$REPO/manifests" >"$OUT/kustomize-base.yaml"
"$KUBECTL" kustomize "$REPO/manifests/samples" >"$OUT/kustomize-samples.yaml"
cd "$OUT"
"$VENV/bin/checkov" --config-file "$HERE/config.yaml" --directory .
