"""The node's life on a machine: a crashed node (launcher and components killed, shims and
Pods left running) is cleaned up by the next start, and a stop leaves nothing behind.

Runs first in the session (``node_lifecycle`` marker, ordered by conftest): it needs the
machine's node lock, which the session-wide ``node_cluster`` holds once it has started.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from tests.e2e.conftest import wait_for
from tests.e2e.operator_env import run_kubectl

from devenv import ControlPlane, cannot_run_node, nodehost
from devenv.faults import crash
from devenv.processes import pid_alive

pytestmark = [pytest.mark.node_lifecycle, pytest.mark.timeout(900)]
START_TIMEOUT = float(os.environ.get("VECTORSCHEMA_E2E_NODE_START_TIMEOUT", "240"))

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "survivor", "namespace": "default"},
    "spec": {
        "terminationGracePeriodSeconds": 1,
        "containers": [
            {
                "name": "main",
                "image": "vectorschema.local/nettest:1",
                "imagePullPolicy": "Never",
                "args": ["serve"],
            }
        ],
    },
}


def _pod_processes() -> set[int]:
    return {
        int(line.split()[2])
        for line in nodehost.leftovers(Path("/nonexistent"))
        if line.startswith("Pod process")
    }


def test_a_crashed_node_is_scrubbed_by_the_next_start_and_stop_leaves_nothing(
    tmp_path: Path,
) -> None:
    reason = cannot_run_node()
    if reason is not None:
        pytest.fail(f"this host cannot run the local node: {reason}", pytrace=False)
    first = ControlPlane(tmp_path / "first", node=True)
    first.start(timeout=START_TIMEOUT)
    assert first.node is not None
    bin_dir, first_dir = first.node.bin_dir, first.node.node_dir
    run_kubectl(first.kubeconfig, "apply", "-f", "-", input=json.dumps(POD))
    wait_for(
        lambda: (
            json.loads(
                run_kubectl(first.kubeconfig, "get", "pod", "survivor", "-o", "json").stdout
            )["status"].get("phase")
            == "Running"
        ),
        timeout=120,
        message="the Pod Running",
    )

    holder = crash(first, keep_lock_holder=True)
    assert holder is not None
    left = nodehost.leftovers(bin_dir, first_dir)
    assert any("containerd-shim-runc-v2" in ln for ln in left), left
    assert _pod_processes(), left
    assert "bridge vsnode0" in left and any(ln.startswith("mount ") for ln in left), left
    survivors = _pod_processes()
    os.kill(holder, signal.SIGKILL)  # now the node is a crashed one: nobody holds its lock

    second = ControlPlane(tmp_path / "second", node=True)
    try:
        second.start(timeout=START_TIMEOUT)
        assert second.node is not None
        assert not any(pid_alive(pid) for pid in survivors)
        assert not [ln for ln in nodehost.leftovers(bin_dir, first_dir) if "mount" in ln]
    finally:
        second.stop()
    assert nodehost.leftovers_after_stop(bin_dir, first_dir) == []
    assert nodehost.leftovers_after_stop(bin_dir, tmp_path / "second" / "node") == []
