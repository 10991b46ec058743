"""The operator as a child process (``kopf run -m vectorschema.k8s.handlers``), for tests
and benchmarks that need several operators, a real process death, or its peak RSS; and
the kube-apiserver audit log (``ControlPlane(audit_log=True)``) read back by user.

Imports only the standard library and :mod:`devenv.processes`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from devenv.processes import log_tail, parent_death_preexec


class OperatorProcess:
    """One ``kopf run`` child with its own environment and log file."""

    def __init__(
        self,
        log_path: Path,
        *,
        env: Mapping[str, str],
        args: Sequence[str] = ("--all-namespaces", "--standalone"),
        python: str = sys.executable,
    ) -> None:
        self.log_path = log_path
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
        self.cmd = [python, "-m", "kopf", "run", "-m", "vectorschema.k8s.handlers", *args]
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        try:
            self._proc = subprocess.Popen(
                self.cmd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=parent_death_preexec(),
            )
        finally:
            log.close()
        return self

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("not started")
        return self._proc.pid

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, grace: float = 40.0) -> int | None:
        """SIGTERM (kopf stops its daemons, then exits), SIGKILL after ``grace`` s."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def rss_mb(self) -> float:
        """Current resident set size (MB), from /proc."""
        return _status_kb(self.pid, "VmRSS") / 1024

    def peak_rss_mb(self) -> float:
        """Peak resident set size so far (MB): the kernel's high-water mark (VmHWM)."""
        return _status_kb(self.pid, "VmHWM") / 1024

    def cpu_seconds(self) -> float:
        """CPU time used so far (user + system, all threads), from /proc."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def __enter__(self) -> OperatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


# --- the audit log ------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditEvent:
    """One completed request: who, what, on which object, when (epoch seconds)."""

    user: str
    verb: str
    resource: str
    subresource: str
    namespace: str
    name: str
    code: int
    time: float
    user_agent: str


def _epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def read_audit(path: Path, offset: int = 0) -> tuple[list[AuditEvent], int]:
    """The events in the audit log from byte ``offset``, and the offset after them."""
    events: list[AuditEvent] = []
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            for raw in fh:
                if not raw.endswith(b"\n"):
                    break  # half-written: read it next time
                offset += len(raw)
                data = json.loads(raw)
                ref = data.get("objectRef") or {}
                events.append(
                    AuditEvent(
                        user=(data.get("user") or {}).get("username", ""),
                        verb=data.get("verb", ""),
                        resource=ref.get("resource", ""),
                        subresource=ref.get("subresource", ""),
                        namespace=ref.get("namespace", ""),
                        name=ref.get("name", ""),
                        code=(data.get("responseStatus") or {}).get("code", 0),
                        time=_epoch(data.get("stageTimestamp") or data["requestReceivedTimestamp"]),
                        user_agent=data.get("userAgent", ""),
                    )
                )
    except FileNotFoundError:
        pass
    return events, offset


def by_user(events: Iterator[AuditEvent] | list[AuditEvent], user: str) -> list[AuditEvent]:
    return [e for e in events if e.user == user]


def count_requests(events: list[AuditEvent]) -> Counter[str]:
    """Requests by ``verb resource[/subresource]``."""
    return Counter(
        f"{e.verb} {e.resource}{'/' + e.subresource if e.subresource else ''}" for e in events
    )
