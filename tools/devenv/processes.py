"""Child processes and ports: free ports, log tails, liveness by PID (recycled PIDs
ignored), stopping by PID, and the Linux parent-death signal.

Imports only the standard library and :mod:`devenv.errors`.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from devenv.errors import ControlPlaneError, PortInUseError

STOP_GRACE_SECONDS = 10.0
LOG_TAIL_LINES = 30


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a text file ("" if it does not exist)."""
    try:
        with path.open("rb") as fh:
            tail = collections.deque(fh, maxlen=lines)
    except OSError:
        return ""
    return b"".join(tail).decode("utf-8", "replace").rstrip("\n")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that is free right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def ensure_port_free(port: int, purpose: str, host: str = "127.0.0.1") -> None:
    """Raise :class:`ControlPlaneError` if ``host:port`` cannot be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(
                    f"port {port} on {host} ({purpose}) is already in use: "
                    "stop whatever listens there or choose another port"
                ) from None
            raise ControlPlaneError(
                f"cannot use port {port} on {host} ({purpose}): {exc}"
            ) from None


def parent_death_preexec() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGKILL when the thread that started it
    dies, even by SIGKILL (Linux ``PR_SET_PDEATHSIG``); ``None`` elsewhere.

    SIGKILL, not SIGTERM: all three would get the signal at once, etcd would be gone first
    and kube-apiserver's graceful shutdown then hangs for a minute trying to reach it.
    Nothing is lost: etcd's data is wiped at the next start anyway.
    libc is loaded here, in the parent: the child only makes one system call.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    sigkill = int(signal.SIGKILL)

    def preexec() -> None:  # pragma: no cover - runs in the forked child
        pr_set_pdeathsig = 1
        prctl(pr_set_pdeathsig, sigkill, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl
            os.kill(os.getpid(), sigkill)

    return preexec


def _pid_state(pid: int) -> str | None:
    """Process state letter from /proc (``None`` if gone or /proc is unavailable)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[0]


def pid_alive(pid: int, exe: str | None = None) -> bool:
    """True if ``pid`` runs (not a zombie) and, when ``exe`` is given, is that program."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    if Path("/proc").is_dir():
        if _pid_state(pid) in (None, "Z", "X"):
            return False
        if exe is not None:
            try:
                argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0]
            except OSError:
                return False
            return argv0.decode("utf-8", "replace") == exe
    return True


def stop_pid(pid: int, exe: str | None = None, grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM ``pid`` (if it still is ``exe``), SIGKILL it after ``grace`` seconds."""
    if not pid_alive(pid, exe):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not pid_alive(pid, exe):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and pid_alive(pid, exe):
        time.sleep(0.05)


@dataclass
class Process:
    name: str
    exe: str
    popen: subprocess.Popen[bytes]
    log: Path
    ports: dict[int, str]
    args: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def terminate(self) -> None:
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                self.popen.terminate()

    def wait_or_kill(self, grace: float) -> None:
        try:
            self.popen.wait(timeout=max(grace, 0.0))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.popen.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=5)
