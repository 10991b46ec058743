"""The launcher's command line: ``up`` (detached or ``--foreground``), ``status``, ``down``.

Run with ``tools`` on the import path (``make cluster`` / ``make cluster-down`` do)::

    PYTHONPATH=tools python -m devenv up [--state-dir DIR] [--foreground]
    PYTHONPATH=tools python -m devenv status [--state-dir DIR]
    PYTHONPATH=tools python -m devenv down [--state-dir DIR]

``up`` prints ``export KUBECONFIG=... PATH=...:$PATH`` as its last line, so
``eval "$(PYTHONPATH=tools python -m devenv up)"`` configures the shell.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from devenv.controlplane import ControlPlane
from devenv.errors import ControlPlaneError
from devenv.node import Node
from devenv.paths import DEFAULT_STATE_DIR, down_command
from devenv.state import any_alive, cluster_ready, read_pids, state_lock, stop_state_dir


def kubectl_dir() -> Path:
    """The directory holding the ``kubectl`` of this virtualenv (next to the interpreter)."""
    return Path(sys.executable).parent


def export_line(kubeconfig: Path) -> str:
    """The shell line that points kubectl at the cluster."""
    return (
        f"export KUBECONFIG={shlex.quote(str(kubeconfig))} "
        f"PATH={shlex.quote(str(kubectl_dir()))}:$PATH"
    )


def _info(msg: str) -> None:
    print(f"localcluster: {msg}", file=sys.stderr, flush=True)


def _cmd_up(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir.resolve()
    bin_dir: Path | None = args.bin_dir
    if args.foreground:
        with state_lock(state_dir):
            plane = ControlPlane(
                state_dir, bin_dir, port=args.port, node=args.node, node_lock_timeout=args.node_wait
            )
            t0 = time.monotonic()
            plane.start(timeout=args.timeout)
        _info(f"ready in {time.monotonic() - t0:.1f} s at {plane.server}; Ctrl-C stops it")
        _node_line(plane)
        print(export_line(plane.kubeconfig), flush=True)
        try:
            while plane.running:
                time.sleep(0.5)
            dead = ", ".join(p.name for p in plane._procs if not p.running())
            raise ControlPlaneError(f"{dead} exited; logs in {plane.logs_dir}")
        except KeyboardInterrupt:
            _info("stopping")
        finally:
            plane.stop()
        return 0

    with state_lock(state_dir):
        ready = cluster_ready(state_dir)
        if ready is not None:
            _info(f"reusing the running control plane at {ready['server']}")
            if ready.get("node"):
                _info(f"with its node {ready['node']} (kubectl get nodes)")
            else:
                _info("it runs without a node: make cluster-down, then make cluster, for one")
            print(export_line(Path(ready["kubeconfig"])), flush=True)
            return 0
        if stop_state_dir(state_dir):
            _info("stopped an unhealthy earlier control plane from this state dir")
        plane = ControlPlane(
            state_dir,
            bin_dir,
            port=args.port,
            detached=True,
            node=args.node,
            node_lock_timeout=args.node_wait,
        )
        t0 = time.monotonic()
        plane.start(timeout=args.timeout)
    _info(f"ready in {time.monotonic() - t0:.1f} s at {plane.server} (logs: {plane.logs_dir})")
    _node_line(plane)
    _info(f"stop it with: {down_command(state_dir)}")
    print(export_line(plane.kubeconfig), flush=True)
    return 0


def _node_line(plane: ControlPlane) -> None:
    if plane.node is not None:
        _info(f"started a node: {plane.node.name} is Ready (kubectl get nodes)")
    elif plane.node_unavailable is not None:
        _info(f"started no node: {plane.node_unavailable}; the control plane runs alone")
    else:
        _info("started no node (--node=no)")


def _cmd_down(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir.resolve()
    with state_lock(state_dir):
        if stop_state_dir(state_dir):
            _info(f"stopped the control plane of {state_dir} (and its node, if it had one)")
        else:
            _info(f"no control plane running from {state_dir}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir.resolve()
    ready = cluster_ready(state_dir)
    if ready is not None:
        print(f"running and ready: {ready['server']} (kubeconfig {ready['kubeconfig']})")
        node = Node.attach(state_dir) if ready.get("node") else None
        print(f"node: {ready['node']}" if node is not None else "node: none")
        return 0
    pids = read_pids(state_dir)
    if pids is not None and any_alive(pids):
        print(f"running but not ready: {pids.get('server')} (logs in {state_dir / 'logs'})")
        return 1
    print(f"not running ({state_dir})")
    return 3


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="localcluster", description="A local etcd + kube-apiserver + controller-manager."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def add_state_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--state-dir",
            type=Path,
            default=DEFAULT_STATE_DIR,
            help=f"certificates, etcd data, logs and pids (default: {DEFAULT_STATE_DIR})",
        )

    up = sub.add_parser("up", help="start (or reuse) a detached control plane")
    add_state_dir(up)
    up.add_argument("--foreground", action="store_true", help="run until Ctrl-C")
    up.add_argument("--port", type=int, default=None, help="kube-apiserver port (default: free)")
    up.add_argument("--timeout", type=float, default=90.0, help="readiness timeout in seconds")
    up.add_argument("--bin-dir", type=Path, default=None, help="binaries (default: build.sh)")
    up.add_argument(
        "--node",
        choices=("auto", "yes", "no"),
        default="auto",
        type=str,
        help="start a node too: auto (when the host can; default), yes (or fail), no",
    )
    up.add_argument(
        "--node-wait",
        type=float,
        default=0.0,
        help="seconds to wait for another checkout's node to stop (default 0: do not wait)",
    )
    up.set_defaults(func=_cmd_up)
    down = sub.add_parser("down", help="stop the control plane of a state dir")
    add_state_dir(down)
    down.set_defaults(func=_cmd_down)
    status = sub.add_parser("status", help="exit 0 if running and ready")
    add_state_dir(status)
    status.set_defaults(func=_cmd_status)

    args = parser.parse_args(argv)
    if getattr(args, "node", None) is not None:
        args.node = {"auto": "auto", "yes": True, "no": False}[args.node]
    try:
        rc: int = args.func(args)
    except ControlPlaneError as exc:
        print(f"localcluster: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return rc
