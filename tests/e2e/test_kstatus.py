"""The status is kstatus-compatible: the library behind Argo CD's and Flux's health checks
(sigs.k8s.io/cli-utils/pkg/kstatus, built from Go modules by tools/kstatus/build.sh)
reads each of the operator's states the way a GitOps tool should show it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.operator_env import KubectlFn, apply, namespace_doc, reason_is, vns

REPO = Path(__file__).resolve().parents[2]
VECTOR = {"name": "v", "size": 4, "distance": "Cosine"}

pytestmark = pytest.mark.usefixtures("operator")


@pytest.fixture(scope="module")
def kstatus() -> Path:
    done = subprocess.run(
        ["bash", str(REPO / "tools" / "kstatus" / "build.sh")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip().splitlines()[-1])


def verdict(kstatus: Path, obj: dict[str, Any]) -> dict[str, str]:
    done = subprocess.run(
        [str(kstatus)], input=json.dumps(obj), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    result: list[dict[str, str]] = json.loads(done.stdout)
    return result[0]


@pytest.mark.parametrize(
    ("spec", "condition", "kstatus_status"),
    [
        pytest.param(
            {"plugins": [{"name": "p", "vectors": [VECTOR]}]},
            ("Ready", "True", "Reconciled"),
            "Current",
            id="ready-is-Current",
        ),
        pytest.param(
            {"plugins": [{"name": "missing-plugin"}]},
            ("Stalled", "True", "PluginNotFound"),
            "Failed",
            id="stalled-is-Failed",
        ),
        pytest.param(
            {
                "plugins": [{"name": "p", "vectors": [VECTOR]}],
                "qdrant": {"url": "http://127.0.0.1:1"},
            },
            ("Reconciling", "True", "QdrantUnavailable"),
            "InProgress",
            id="retrying-is-InProgress",
        ),
    ],
)
def test_states_as_gitops_tools_see_them(
    kubectl: KubectlFn,
    wait_for: Any,
    namespace: str,
    kstatus: Path,
    spec: dict[str, Any],
    condition: tuple[str, str, str],
    kstatus_status: str,
) -> None:
    apply(kubectl, namespace_doc(namespace, "health", **spec))
    obj = wait_for(reason_is(kubectl, namespace, "health", *condition), 60)
    assert verdict(kstatus, obj)["status"] == kstatus_status


def test_awaiting_confirmation_is_InProgress_with_the_plan_message(
    kubectl: KubectlFn, wait_for: Any, namespace: str, kstatus: Path
) -> None:
    """A plan waiting for approval is not healthy yet: a sync waits (and says why)."""
    two = [{"name": "p", "vectors": [VECTOR, {"name": "w", "type": "sparse"}]}]
    apply(kubectl, namespace_doc(namespace, "pending", plugins=two))
    wait_for(reason_is(kubectl, namespace, "pending", "Ready", "True", "Reconciled"), 60)
    assert verdict(kstatus, vns(kubectl, namespace, "pending"))["status"] == "Current"
    apply(
        kubectl, namespace_doc(namespace, "pending", plugins=[{"name": "p", "vectors": [VECTOR]}])
    )
    obj = wait_for(
        reason_is(kubectl, namespace, "pending", "Ready", "False", "AwaitingConfirmation"), 60
    )
    seen = verdict(kstatus, obj)
    assert seen["status"] == "InProgress"
    assert obj["status"]["plan"]["fingerprint"] in seen["message"]


def test_a_spec_change_not_yet_observed_is_InProgress(
    kubectl: KubectlFn, wait_for: Any, namespace: str, kstatus: Path
) -> None:
    """observedGeneration behind generation: kstatus must not report the old Ready."""
    apply(kubectl, namespace_doc(namespace, "moving", plugins=[{"name": "p", "vectors": [VECTOR]}]))
    obj = wait_for(reason_is(kubectl, namespace, "moving", "Ready", "True", "Reconciled"), 60)
    obj["metadata"]["generation"] += 1  # as the API server shows it right after an edit
    assert verdict(kstatus, obj)["status"] == "InProgress"
