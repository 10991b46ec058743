#!/usr/bin/env python3
"""Write the copies of the CRDs that kustomize and Helm need inside their own directories.

kustomize reads no file outside its kustomization's directory, and a Helm chart carries its
CRDs in its own crds/, so the generated crds/*.yaml are copied (by `make crds`, after the
generation; tests/unit/test_chart.py fails when a copy differs from what this writes):

- manifests/crds/<crd>.yaml: verbatim (its kustomization adds the "do not prune" marks);
- charts/vectorschema/crds/<crd>.yaml: with those marks in the metadata, since Argo CD and
  Flux apply a chart's CRDs as part of the application and would prune them with it; the
  kopf peering CRDs come from manifests/crds/kopf.dev.yaml.

    python tools/crdcopies.py [--check]
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GENERATED = REPO / "crds"
KOPF = REPO / "manifests" / "crds" / "kopf.dev.yaml"
KUSTOMIZE = REPO / "manifests" / "crds"
CHART = REPO / "charts" / "vectorschema" / "crds"

# Never prune a CRD: that would delete every resource of its kind, in every namespace.
KEEP = (
    "  annotations:\n"
    "    argocd.argoproj.io/sync-options: Prune=false\n"
    "    kustomize.toolkit.fluxcd.io/prune: disabled\n"
)


def with_keep_marks(text: str) -> str:
    """``text`` with KEEP inserted after each top-level ``metadata:`` line."""
    out = []
    for line in text.splitlines(keepends=True):
        out.append(line)
        if line.rstrip() == "metadata:":
            out.append(KEEP)
    return "".join(out)


def copies() -> dict[Path, str]:
    """Every copy, by path, with the content it must have."""
    wanted: dict[Path, str] = {}
    for crd in sorted(GENERATED.glob("*.yaml")):
        text = crd.read_text()
        wanted[KUSTOMIZE / crd.name] = text
        wanted[CHART / crd.name] = with_keep_marks(text)
    wanted[CHART / KOPF.name] = with_keep_marks(KOPF.read_text())
    return wanted


def main(argv: list[str]) -> int:
    check = argv == ["--check"]
    stale = []
    for path, text in copies().items():
        if not path.exists() or path.read_text() != text:
            stale.append(path)
            if not check:
                path.write_text(text)
    if check and stale:
        names = ", ".join(str(p.relative_to(REPO)) for p in stale)
        print(f"crdcopies: stale: {names}; run `make crds`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
