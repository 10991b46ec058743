"""The status reads right in GitOps tools, checked with their own code on live objects:

- kstatus (sigs.k8s.io/cli-utils/pkg/kstatus, built from Go modules by
  tools/kstatus/build.sh), which Flux and kstatus-aware tools use;
- Argo CD's health checks of manifests/argocd/*.lua, run by gopher-lua the way Argo CD
  runs them (tools/argocdhealth, built from Go modules), since Argo CD does not read
  kstatus conditions of unknown CRDs: Healthy, Progressing, Degraded, and Suspended (shown
  as paused) for a plan awaiting approval.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.operator_env import (
    KubectlFn,
    apply,
    get,
    namespace_doc,
    plugin_doc,
    reason_is,
    vns,
)
from tests.gotools import built

REPO = Path(__file__).resolve().parents[2]
ARGOCD = REPO / "manifests" / "argocd"
VECTOR = {"name": "v", "size": 4, "distance": "Cosine"}

pytestmark = pytest.mark.usefixtures("operator")


@pytest.fixture(scope="module")
def kstatus() -> Path:
    return built("kstatus")


@pytest.fixture(scope="module")
def argocd() -> Path:
    return built("argocdhealth")


def argo_health(harness: Path, obj: dict[str, Any]) -> dict[str, str]:
    """What Argo CD shows for ``obj``, from the health script of its kind."""
    script = ARGOCD / f"{obj['kind'].lower()}-health.lua"
    done = subprocess.run(
        [str(harness), str(script)],
        input=json.dumps(obj),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result: list[dict[str, str]] = json.loads(done.stdout)
    return result[0]


def verdict(kstatus: Path, obj: dict[str, Any]) -> dict[str, str]:
    done = subprocess.run(
        [str(kstatus)], input=json.dumps(obj), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    result: list[dict[str, str]] = json.loads(done.stdout)
    return result[0]


@pytest.mark.parametrize(
    ("spec", "condition", "kstatus_status", "argo_status"),
    [
        pytest.param(
            {"plugins": [{"name": "p", "vectors": [VECTOR]}]},
            ("Ready", "True", "Reconciled"),
            "Current",
            "Healthy",
            id="ready-is-Current",
        ),
        pytest.param(
            {"plugins": [{"name": "missing-plugin"}]},
            ("Stalled", "True", "PluginNotFound"),
            "Failed",
            "Degraded",
            id="stalled-is-Failed",
        ),
        pytest.param(
            {
                "plugins": [{"name": "p", "vectors": [VECTOR]}],
                "qdrant": {"url": "http://127.0.0.1:1"},
            },
            ("Reconciling", "True", "QdrantUnavailable"),
            "InProgress",
            "Progressing",
            id="retrying-is-InProgress",
        ),
    ],
)
def test_states_as_gitops_tools_see_them(
    kubectl: KubectlFn,
    wait_for: Any,
    namespace: str,
    kstatus: Path,
    argocd: Path,
    spec: dict[str, Any],
    condition: tuple[str, str, str],
    kstatus_status: str,
    argo_status: str,
) -> None:
    apply(kubectl, namespace_doc(namespace, "health", **spec))
    obj = wait_for(reason_is(kubectl, namespace, "health", *condition), 60)
    assert verdict(kstatus, obj)["status"] == kstatus_status
    argo = argo_health(argocd, obj)
    assert argo["status"] == argo_status, argo
    assert argo["message"].startswith(condition[2]), argo


def test_awaiting_confirmation_is_InProgress_with_the_plan_message(
    kubectl: KubectlFn, wait_for: Any, namespace: str, kstatus: Path, argocd: Path
) -> None:
    """A plan waiting for approval is not healthy yet: a sync waits (and says why); Argo CD
    shows it Suspended (paused), with the fingerprint to approve."""
    two = [{"name": "p", "vectors": [VECTOR, {"name": "w", "type": "sparse"}]}]
    apply(kubectl, namespace_doc(namespace, "pending", plugins=two))
    wait_for(reason_is(kubectl, namespace, "pending", "Ready", "True", "Reconciled"), 60)
    assert verdict(kstatus, vns(kubectl, namespace, "pending"))["status"] == "Current"
    assert argo_health(argocd, vns(kubectl, namespace, "pending"))["status"] == "Healthy"
    apply(
        kubectl, namespace_doc(namespace, "pending", plugins=[{"name": "p", "vectors": [VECTOR]}])
    )
    obj = wait_for(
        reason_is(kubectl, namespace, "pending", "Ready", "False", "AwaitingConfirmation"), 60
    )
    seen = verdict(kstatus, obj)
    assert seen["status"] == "InProgress"
    assert obj["status"]["plan"]["fingerprint"] in seen["message"]
    argo = argo_health(argocd, obj)
    assert argo["status"] == "Suspended", argo
    assert argo["message"].startswith("AwaitingConfirmation: ")
    assert obj["status"]["plan"]["fingerprint"] in argo["message"]


def test_a_spec_change_not_yet_observed_is_InProgress(
    kubectl: KubectlFn, wait_for: Any, namespace: str, kstatus: Path, argocd: Path
) -> None:
    """observedGeneration behind generation: kstatus must not report the old Ready."""
    apply(kubectl, namespace_doc(namespace, "moving", plugins=[{"name": "p", "vectors": [VECTOR]}]))
    obj = wait_for(reason_is(kubectl, namespace, "moving", "Ready", "True", "Reconciled"), 60)
    obj["metadata"]["generation"] += 1  # as the API server shows it right after an edit
    assert verdict(kstatus, obj)["status"] == "InProgress"
    argo = argo_health(argocd, obj)
    assert argo == {
        "name": f"{namespace}/moving",
        "status": "Progressing",
        "message": "Waiting for the operator to observe generation "
        + str(obj["metadata"]["generation"]),
    }


def test_plugins_as_argo_cd_shows_them(kubectl: KubectlFn, wait_for: Any, argocd: Path) -> None:
    """A valid Plugin is Healthy once the operator has seen it; an invalid one (only
    possible if the CRD's validation was bypassed: a status sample) is Degraded."""
    name = f"argo-{uuid.uuid4().hex[:6]}"
    apply(kubectl, plugin_doc(name, VECTOR))
    try:

        def seen() -> dict[str, Any] | None:
            obj = get(kubectl, "plugins.vectorschema.dev", name)
            status = obj.get("status") or {}
            return (
                obj if status.get("observedGeneration") == obj["metadata"]["generation"] else None
            )

        obj = wait_for(seen, 60, "the Plugin's status")
        assert argo_health(argocd, obj)["status"] == "Healthy"
        invalid = {
            "observedGeneration": obj["metadata"]["generation"],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "InvalidSpec",
                    "message": "spec.vectors[0].size: must be positive",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
        }
        assert argo_health(argocd, {**obj, "status": invalid}) == {
            "name": f"/{name}",
            "status": "Degraded",
            "message": "InvalidSpec: spec.vectors[0].size: must be positive",
        }
        assert (
            argo_health(argocd, {k: v for k, v in obj.items() if k != "status"})["status"]
            == "Progressing"
        )
    finally:
        kubectl("delete", "plugins.vectorschema.dev", name, "--ignore-not-found", "--wait=false")


def test_a_namespace_never_reconciled_is_Progressing(argocd: Path) -> None:
    obj = namespace_doc("t", "new", plugins=[{"name": "p"}])
    obj["metadata"]["generation"] = 1
    assert argo_health(argocd, obj) == {
        "name": "t/new",
        "status": "Progressing",
        "message": "Waiting for the operator to report status",
    }
