"""Detached clusters: the pids file of a state dir, readiness and stop by PID.

A control plane started with ``detached=True`` outlives its launcher; these functions find
it again from ``<state-dir>/pids.json``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from devenv.nodehost import stop_node_of
from devenv.probes import client_ssl_context, https_get
from devenv.processes import pid_alive, stop_pid

PIDS_FILE = "pids.json"


def read_pids(state_dir: Path) -> dict[str, Any] | None:
    """The pids file of ``state_dir`` (``None`` if absent or unreadable)."""
    try:
        data = json.loads((Path(state_dir) / PIDS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _processes(pids: dict[str, Any]) -> list[tuple[str, int, str]]:
    out = []
    for entry in pids.get("processes", []):
        with contextlib.suppress(KeyError, TypeError, ValueError):
            out.append((str(entry["name"]), int(entry["pid"]), str(entry["exe"])))
    return out


def any_alive(pids: dict[str, Any]) -> bool:
    return any(pid_alive(pid, exe) for _, pid, exe in _processes(pids))


def cluster_ready(state_dir: Path) -> dict[str, Any] | None:
    """The pids record if the cluster of ``state_dir`` runs completely and is ready."""
    pids = read_pids(state_dir)
    if pids is None or not isinstance(pids.get("server"), str):
        return None
    procs = _processes(pids)
    names = {name for name, _, _ in procs}
    if names != {"etcd", "kube-apiserver", "kube-controller-manager"}:
        return None
    if not all(pid_alive(pid, exe) for _, pid, exe in procs):
        return None
    pki = Path(state_dir) / "pki"
    try:
        ctx = client_ssl_context(pki / "ca.crt", pki / "admin.crt", pki / "admin.key")
        status, _ = https_get(pids["server"], "/readyz", ctx, timeout=5)
    except (OSError, ssl.SSLError, http.client.HTTPException):
        return None
    return pids if status == 200 else None


def stop_state_dir(state_dir: Path) -> bool:
    """Stop the processes recorded in ``state_dir`` and its node (if this machine's node
    belongs to it: every process, mount and rule of it); True if any was running."""
    node_was_running = stop_node_of(state_dir)
    pids = read_pids(state_dir)
    if pids is None:
        return node_was_running
    procs = _processes(pids)
    was_running = any(pid_alive(pid, exe) for _, pid, exe in procs)
    front = [p for p in procs if p[0] != "etcd"]
    for _, pid, exe in front:
        if pid_alive(pid, exe):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    for _, pid, exe in front:
        stop_pid(pid, exe)
    for name, pid, exe in procs:
        if name == "etcd":
            stop_pid(pid, exe)
    with contextlib.suppress(OSError):
        (Path(state_dir) / PIDS_FILE).unlink()
    return was_running or node_was_running


# --------------------------------------------------------------------------------------
# CLI


@contextlib.contextmanager
def state_lock(state_dir: Path) -> Iterator[None]:
    """Serialise ``up``/``down`` on one state dir."""
    import fcntl

    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / "lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
