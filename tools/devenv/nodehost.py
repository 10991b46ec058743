"""The machine side of the local node: can this host run one, the machine-wide lock, the
record of the running node, and the clean-up that removes every trace of one.

Only one node can run on a machine at a time: its bridge, its iptables chains, its routes
and the ``kubepods`` cgroups are global. :func:`acquire_lock` takes an ``flock`` on
:data:`LOCK_FILE`; the node hands the lock to a small holder process (the ``pause`` binary)
that lives as long as the node, so the lock is held by a detached node too and is released
by the kernel when the node dies in any way. Whoever gets the lock next finds the record
(:data:`RECORD_FILE`) of a node that nobody holds any more and runs :func:`scrub` on it
before starting: old processes and container shims, container processes, mounts (network
namespaces included), cgroups, chains, the route and the bridge, and the sysctls restored.
A normal stop runs the same :func:`scrub`: it is idempotent.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from devenv import network
from devenv.errors import NodeBusyError
from devenv.processes import pid_alive, stop_pid

RUN_DIR = Path("/run/vectorschema-node")
LOCK_FILE = RUN_DIR / "lock"
RECORD_FILE = RUN_DIR / "record.json"
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: The kubelet's cgroup of all Pods (``cgroupRoot: /``, ``cgroupsPerQOS: true``).
KUBEPODS = "kubepods"
CONTAINER_LOGS_LINKS = Path("/var/log/containers")
#: Stop order of the recorded processes: the kubelet first (it would restart containers),
#: containerd after the node's clients, the lock holder last.
STOP_ORDER = ("kubelet", "kube-proxy", "kube-scheduler", "containerd", "node-lock")


def cannot_run_node() -> str | None:
    """Why this host cannot run the node (``None`` if it can)."""
    if not sys.platform.startswith("linux"):
        return "the node needs Linux"
    if os.geteuid() != 0:
        return "the node needs root (network namespaces, a bridge, iptables, mounts)"
    if (
        not (CGROUP_ROOT / "cgroup.controllers").is_file()
        and not (CGROUP_ROOT / "memory" / "memory.limit_in_bytes").is_file()
    ):
        return f"no usable cgroups under {CGROUP_ROOT} (neither v2 nor a v1 memory controller)"
    for tool in ("ip", "mount", "umount"):
        if shutil.which(tool) is None:
            return f"the command {tool!r} is missing"
    if not Path("/proc/sys/net/ipv4/ip_forward").is_file():
        return "no IPv4 forwarding sysctl (network namespaces unavailable?)"
    return None


# -- the lock -----------------------------------------------------------------------------


def read_record() -> dict[str, Any] | None:
    try:
        data = json.loads(RECORD_FILE.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_record(record: dict[str, Any]) -> None:
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    tmp = RECORD_FILE.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, RECORD_FILE)


def acquire_lock(timeout: float, who: str) -> int:
    """Take the machine-wide node lock; wait up to ``timeout`` s (0: refuse at once).
    Returns the locked file descriptor (close-on-exec)."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + timeout
    told = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            pass
        record = read_record() or {}
        holder = (
            f"the node of {record.get('state_dir', '?')} "
            f"(launcher pid {record.get('launcher_pid', '?')})"
        )
        if time.monotonic() >= deadline:
            os.close(fd)
            raise NodeBusyError(
                f"another local node runs on this machine: {holder}; only one can run at a "
                f"time (bridge and iptables chains are global). Stop it first (make "
                f"cluster-down in its checkout), or wait"
            )
        if not told:
            print(f"{who}: waiting up to {timeout:.0f} s for {holder} to stop", file=sys.stderr)
            told = True
        time.sleep(1.0)


# -- clean-up -----------------------------------------------------------------------------


def _exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]


def _shims(bin_dir: str, address: str) -> list[int]:
    """PIDs of the containerd shims of our containerd (binary and socket address)."""
    shim = str(Path(bin_dir) / "containerd-shim-runc-v2")
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            pid = int(entry.name)
            if _exe(pid) == shim and address in _cmdline(pid):
                out.append(pid)
    return out


def _kubepods_dirs() -> list[Path]:
    """Every ``kubepods`` cgroup directory (v1 hierarchies, the hybrid and the v2 mount)."""
    dirs = [CGROUP_ROOT / KUBEPODS]
    with contextlib.suppress(OSError):
        dirs += [d / KUBEPODS for d in CGROUP_ROOT.iterdir() if d.is_dir()]
    return [d for d in dirs if d.is_dir()]


def _cgroup_pids(top: Path) -> set[int]:
    pids: set[int] = set()
    for dirpath, _, files in os.walk(top):
        if "cgroup.procs" in files:
            with contextlib.suppress(OSError, ValueError):
                text = (Path(dirpath) / "cgroup.procs").read_text()
                pids.update(int(p) for p in text.split())
    return pids


def kill_pod_processes(timeout: float = 15.0) -> None:
    """SIGKILL every process in the kubelet's ``kubepods`` cgroups; remove the cgroups."""
    deadline = time.monotonic() + timeout
    while True:
        pids = (
            set().union(*(_cgroup_pids(d) for d in _kubepods_dirs())) if _kubepods_dirs() else set()
        )
        if not pids or time.monotonic() > deadline:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    for top in _kubepods_dirs():
        for dirpath, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root``, deepest first (from /proc/self/mountinfo)."""
    prefix = str(root).rstrip("/") + "/"
    out = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].encode().decode("unicode_escape")
            if point == prefix.rstrip("/") or point.startswith(prefix):
                out.append(point)
    return sorted(set(out), key=len, reverse=True)


def unmount_all(root: Path) -> None:
    for _ in range(5):
        points = mounts_under(root)
        if not points:
            return
        for point in points:
            subprocess.run(["umount", "-l", point], capture_output=True, stdin=subprocess.DEVNULL)


#: Paths the kubelet, containerd and libcni hard-code (no flag moves them): the files
#: our node leaves there, and the directories to remove when they are empty afterwards.
HOST_LEFTOVERS = (
    (Path("/var/lib/kubelet/device-plugins"), ("kubelet.sock",)),
    (Path("/var/lib/kubelet"), ()),
    (Path("/var/lib/cni/results"), ("vectorschema-*", "cni-loopback-*")),
    (Path("/var/lib/cni"), ()),
    (RUN_DIR, ("containerd.sock", "containerd.sock.ttrpc")),  # the directory keeps the lock
)
SHIM_SOCKETS = Path("/run/containerd/s")


def _bound_unix_sockets() -> set[str]:
    try:
        lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError:
        return set()
    return {words[-1] for words in (ln.split() for ln in lines) if len(words) >= 8}


def remove_host_leftovers() -> None:
    """Remove what the node leaves in hard-coded host paths: shim sockets nobody listens
    on any more, the kubelet's device-plugin socket, libcni's result cache of our network,
    and those directories when they are empty."""
    bound = _bound_unix_sockets()
    with contextlib.suppress(OSError):
        for sock in SHIM_SOCKETS.iterdir():
            if sock.is_socket() and str(sock) not in bound and f"unix://{sock}" not in bound:
                sock.unlink()
    for directory in (SHIM_SOCKETS, SHIM_SOCKETS.parent):
        with contextlib.suppress(OSError):
            directory.rmdir()
    for directory, patterns in HOST_LEFTOVERS:
        for pattern in patterns:
            for path in directory.glob(pattern):
                if str(path) not in bound:
                    with contextlib.suppress(OSError):
                        path.unlink()
        with contextlib.suppress(OSError):
            directory.rmdir()


def scrub(record: dict[str, Any]) -> None:
    """Remove every trace of the node in ``record`` (processes, shims, Pods, mounts,
    cgroups, chains, route, bridge, sysctls). Idempotent; safe on a half-started node."""
    procs = [p for p in record.get("processes", []) if isinstance(p, dict)]
    for name in STOP_ORDER[:-1]:
        for p in procs:
            if p.get("name") == name:
                stop_pid(int(p["pid"]), str(p["exe"]))
    bin_dir, address = str(record.get("bin_dir", "")), str(record.get("containerd_address", ""))
    if bin_dir and address:
        for pid in _shims(bin_dir, address):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    kill_pod_processes()
    node_dir = record.get("node_dir")
    if node_dir:
        unmount_all(Path(node_dir))
        with contextlib.suppress(OSError):
            for link in CONTAINER_LOGS_LINKS.iterdir():
                if link.is_symlink() and os.readlink(link).startswith(str(node_dir)):
                    link.unlink()
    kube_proxy = Path(bin_dir) / "kube-proxy"
    if bin_dir and kube_proxy.is_file():
        subprocess.run(
            [str(kube_proxy), "--cleanup"], capture_output=True, stdin=subprocess.DEVNULL
        )
    network.remove_guard()
    network.down()
    remove_host_leftovers()
    saved = record.get("sysctls")
    if isinstance(saved, dict):
        network.restore_sysctls({str(k): str(v) for k, v in saved.items()})
    for p in procs:
        if p.get("name") == "node-lock" and pid_alive(int(p["pid"]), str(p["exe"])):
            stop_pid(int(p["pid"]), str(p["exe"]), grace=2.0)
    with contextlib.suppress(OSError):
        RECORD_FILE.unlink()


def leftovers(bin_dir: Path, node_dir: Path | None = None) -> list[str]:
    """Every trace of a node that is still on this machine (empty after a clean stop):
    processes of the node's binaries, Pod processes, the bridge, the local route, chains
    named like ours, mounts under ``node_dir``, ``kubepods`` cgroups, the record, and files
    in the hard-coded host paths."""
    found: list[str] = []
    prefix = str(bin_dir).rstrip("/") + "/"
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _exe(int(entry.name)).startswith(prefix):
            found.append(f"process {entry.name} {_exe(int(entry.name))}")
    pods = set().union(*(_cgroup_pids(d) for d in _kubepods_dirs())) if _kubepods_dirs() else set()
    found += [f"Pod process {pid}" for pid in sorted(pods)]
    found += [f"cgroup {d}" for d in _kubepods_dirs()]
    if network.run(["ip", "link", "show", network.BRIDGE], check=False).returncode == 0:
        found.append(f"bridge {network.BRIDGE}")
    if network.local_route_present():
        found.append(f"local route {network.SERVICE_CIDR}")
    for ipv6 in (False, True):
        ipt = network.iptables_binary(ipv6)
        for table in network.TABLES if ipt else ():
            listing = network.run([str(ipt), "-w", "-t", table, "-S"], check=False).stdout
            found += [
                f"{Path(str(ipt)).name} -t {table} {ln}"
                for ln in listing.splitlines()
                if ln.startswith("-N ") and ln.split()[1].startswith(network.OUR_CHAIN_PREFIXES)
            ]
    if node_dir is not None:
        found += [f"mount {m}" for m in mounts_under(node_dir)]
    if RECORD_FILE.exists():
        found.append(f"record {RECORD_FILE}")
    for directory, patterns in HOST_LEFTOVERS:
        for pattern in patterns:
            found += [f"file {path}" for path in directory.glob(pattern)]
    return found


def leftovers_after_stop(bin_dir: Path, node_dir: Path) -> list[str]:
    """:func:`leftovers` of a node that was stopped, checked under the machine's lock so
    that a node another starter brought up meanwhile is not counted. If someone holds the
    lock already, only what is certainly ours is checked: mounts under ``node_dir`` and a
    record naming its state dir."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            record = read_record() or {}
            found = [f"mount {m}" for m in mounts_under(node_dir)]
            if record.get("node_dir") == str(node_dir):
                found.append(f"record {RECORD_FILE} of {node_dir}")
            return found
        return leftovers(bin_dir, node_dir)
    finally:
        os.close(fd)


def stop_node_of(state_dir: Path) -> bool:
    """Scrub the machine's node if it belongs to ``state_dir``; True if there was one."""
    record = read_record()
    if record is None or Path(str(record.get("state_dir"))) != Path(state_dir).resolve():
        return False
    scrub(record)
    return True
