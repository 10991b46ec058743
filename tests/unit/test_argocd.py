"""The argocd-cm snippet (manifests/argocd/argocd-cm.yaml) carries the health scripts of
manifests/argocd/ verbatim, under the keys Argo CD reads (`resource.customizations.health.
<group>_<kind>`). What the scripts answer is tested with gopher-lua in
tests/e2e/test_argocd_health.py."""

from __future__ import annotations

from pathlib import Path

import yaml

ARGOCD = Path(__file__).resolve().parents[2] / "manifests" / "argocd"


def test_the_configmap_snippet_embeds_each_script_verbatim() -> None:
    data = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())["data"]
    assert data == {
        "resource.customizations.health.vectorschema.dev_Namespace": (
            ARGOCD / "namespace-health.lua"
        ).read_text(),
        "resource.customizations.health.vectorschema.dev_Plugin": (
            ARGOCD / "plugin-health.lua"
        ).read_text(),
    }
