#!/usr/bin/env python3
"""`make run`: the operator and its samples on this machine, in the foreground.

1. A cluster: the current kubeconfig's (``KUBECONFIG``, else ``~/.kube/config``) if it
   answers within a few seconds, else the project's local control plane, started by this
   process (state in ``<state-dir>/run-cluster``) and stopped with it. ``--local-cluster``
   skips the kubeconfig.
2. ``crds/`` applied and Established, then ``manifests/samples/``.
3. The operator as a child process, ``kopf run -m vectorschema.k8s.handlers --all-namespaces
   --standalone``, with the embedded Qdrant (``QDRANT_PATH``, default ``.data/qdrant``)
   unless ``QDRANT_URL`` is set. Its log: ``<state-dir>/operator.log``. On the local
   control plane (whose API server can reach loopback) it also serves the admission
   webhook: ``VECTORSCHEMA_WEBHOOK_PORT`` is set to a free port unless already set (``0``
   or empty: no webhook), and the operator registers it itself, so ``kubectl apply``
   prints the plan. ``VECTORSCHEMA_WEBHOOK_CLIENT_CA`` names the local API server's
   webhook-client CA, so the webhook answers only that API server (mTLS).
4. ``kubectl get vns -A`` whenever it changes, until the sample ``tenant-acme/catalog`` is
   Ready (``--timeout``, default 120 s), then the tables and a few commands to try.
5. Running until Ctrl-C or SIGTERM, then the operator and the control plane (if it started
   one) are stopped, and the exit status is 0. ``--once`` stops right after step 4 (exit 1
   if the sample did not get Ready): for tests and CI.

Any failure prints one line (plus the relevant log lines) on stderr and exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any, NoReturn
from urllib.parse import urlsplit

from devenv import (
    ControlPlane,
    ControlPlaneError,
    export_line,
    free_port,
    log_tail,
    parent_death_preexec,
)

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
KUBECTL = BIN / "kubectl"
KOPF = BIN / "kopf"
CRDS = REPO / "crds"
SAMPLES = REPO / "manifests" / "samples"
DEFAULT_STATE_DIR = REPO / ".state"
DEFAULT_QDRANT_PATH = REPO / ".data" / "qdrant"
VNS = "namespaces.vectorschema.dev"
CRD_NAMES = ("crd/namespaces.vectorschema.dev", "crd/plugins.vectorschema.dev")
SAMPLE_NAMESPACE, SAMPLE_NAME = "tenant-acme", "catalog"
PROBE_TIMEOUT = "5s"
OPERATOR_GRACE_SECONDS = 20.0
LOG_LINES = 20


class RunError(Exception):
    """A failure to report in one line (plus log lines, if any) without a traceback."""


class Stop(BaseException):
    """SIGTERM: unwind like KeyboardInterrupt does for SIGINT."""


def say(msg: str = "") -> None:
    print(f"run: {msg}" if msg else "", flush=True)


def shown(path: Path | str) -> str:
    """``path`` relative to the working directory when it is below it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------------------
# Locks: one `make run` per state dir, and a free embedded Qdrant store
# --------------------------------------------------------------------------------------


def flock_holder(path: Path) -> int | None:
    """The pid holding a flock on ``path``, from /proc/locks (None if unknown)."""
    try:
        st = path.stat()
        locks = Path("/proc/locks").read_text()
    except OSError:
        return None
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in locks.splitlines():
        fields = line.split()
        if "FLOCK" in fields and ident in fields:
            pid = fields[fields.index(ident) - 1]
            if pid.isdigit():
                return int(pid)
    return None


def describe_pid(pid: int | None) -> str:
    if pid is None:
        return ""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    except OSError:
        return f" (pid {pid})"
    cmd = " ".join(a.decode("utf-8", "replace") for a in argv)
    return f" (pid {pid}: {cmd[:120]})"


def hold_run_lock(state_dir: Path) -> IO[str]:
    """Lock ``state_dir`` for this process's lifetime (the file stays open)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "run.lock"
    fh = path.open("a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise RunError(
            f"another `make run` is already running with state in {shown(state_dir)}"
            f"{describe_pid(flock_holder(path))}: stop it first (Ctrl-C in its terminal), "
            "or give this one its own --state-dir"
        ) from None
    return fh


def check_store_free(store: Path) -> None:
    """Fail clearly if another process holds the embedded Qdrant store (local mode allows
    one process per store); the operator would otherwise fail on its first reconcile."""
    lock = store / ".lock"
    if not lock.is_file():
        return
    try:
        fh = lock.open("r+")
    except OSError as exc:
        raise RunError(f"cannot open the embedded Qdrant store {shown(store)}: {exc}") from None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(
                f"the embedded Qdrant store {shown(store)} is in use by another process"
                f"{describe_pid(flock_holder(lock))}, another `make run` or an operator: "
                "stop it, or give this run its own store with QDRANT_PATH=<dir> (or a "
                "server with QDRANT_URL=<url>)"
            ) from None
        fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------
# kubectl
# --------------------------------------------------------------------------------------


def kubectl(kubeconfig: str, *args: str, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, KUBECONFIG=kubeconfig)
    try:
        return subprocess.run(
            [str(KUBECTL), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(
            [str(KUBECTL), *args], 124, "", f"kubectl {args[0]} timed out after {timeout:.0f} s"
        )


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


def configured_kubeconfig() -> tuple[str | None, str]:
    """The current kubeconfig (as KUBECONFIG would name it) if a file of it exists, and why
    not otherwise."""
    env = os.environ.get("KUBECONFIG")
    if env:
        paths = [p for p in env.split(os.pathsep) if p]
        if any(Path(p).expanduser().is_file() for p in paths):
            return env, ""
        return None, f"KUBECONFIG={env} names no existing file"
    default = Path.home() / ".kube" / "config"
    if default.is_file():
        return str(default), ""
    return None, f"KUBECONFIG is not set and {default} does not exist"


def probe_cluster(kubeconfig: str) -> tuple[bool, str]:
    """(reachable, "context <c> at <server>" or why not), within a few seconds."""
    view = kubectl(
        kubeconfig,
        "config",
        "view",
        "--minify",
        "-o",
        "jsonpath={.current-context} {.clusters[0].cluster.server}",
        timeout=15,
    )
    if view.returncode != 0:
        return False, f"no current context ({last_line(view.stderr)})"
    context, _, server = view.stdout.strip().partition(" ")
    where = f"context {context} at {server or '?'}"
    version = kubectl(kubeconfig, "version", "-o", "json", f"--request-timeout={PROBE_TIMEOUT}")
    if version.returncode != 0:
        return False, f"{where} does not answer ({last_line(version.stderr)})"
    try:
        server_version = json.loads(version.stdout)["serverVersion"]["gitVersion"]
    except (ValueError, KeyError, TypeError):
        server_version = "?"
    return True, f"{where} (Kubernetes {server_version})"


def strip_age(table: str) -> list[str]:
    """The table without its last column (AGE), to notice real changes only."""
    return [" ".join(line.split()[:-1]) for line in table.splitlines()]


def ready_condition(obj: dict[str, Any]) -> dict[str, Any]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == "Ready":
            return cond
    return {}


def is_ready(obj: dict[str, Any]) -> bool:
    generation = (obj.get("metadata") or {}).get("generation")
    observed = (obj.get("status") or {}).get("observedGeneration")
    return ready_condition(obj).get("status") == "True" and observed == generation


# --------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------


class Runner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.state_dir: Path = args.state_dir.resolve()
        self.timeout: float = args.timeout
        self.plane: ControlPlane | None = None
        self.kubeconfig = ""
        self.operator: subprocess.Popen[bytes] | None = None
        self.operator_log = self.state_dir / "operator.log"
        self.liveness = ""
        self.hurry = False
        self._lock: IO[str] | None = None

    # -- steps ---------------------------------------------------------------------------

    def run(self) -> int:
        for tool in (KUBECTL, KOPF):
            if not os.access(tool, os.X_OK):
                raise RunError(f"{tool} is missing: run `make install` first")
        self._lock = hold_run_lock(self.state_dir)
        env = self.qdrant_env()
        self.choose_cluster()
        self.apply()
        self.start_operator(env)
        took = self.watch_until_ready()
        self.summary(took)
        if self.args.once:
            return 0
        self.wait_until_stopped()
        return 0

    def qdrant_env(self) -> dict[str, str]:
        url = os.environ.get("QDRANT_URL")
        if url:
            parts = urlsplit(url)
            say(f"Qdrant: the server at {parts.scheme}://{parts.hostname}:{parts.port or ''}")
            return {}
        store = Path(os.environ.get("QDRANT_PATH") or DEFAULT_QDRANT_PATH).expanduser().resolve()
        check_store_free(store)
        say(f"Qdrant: embedded (local mode), data in {shown(store)}")
        return {"QDRANT_PATH": str(store)}

    def choose_cluster(self) -> None:
        if self.args.local_cluster:
            why = "--local-cluster"
        else:
            kubeconfig, why = configured_kubeconfig()
            if kubeconfig is not None:
                ok, detail = probe_cluster(kubeconfig)
                if ok:
                    say(f"cluster: the current kubeconfig's, {detail}")
                    self.kubeconfig = kubeconfig
                    return
                why = detail
        plane_dir = self.state_dir / "run-cluster"
        say(f"cluster: none reachable ({why}); starting the local control plane")
        say(f"  (state and logs in {shown(plane_dir)}; first start builds it, see build.sh)")
        t0 = time.monotonic()
        plane = ControlPlane(plane_dir)
        try:
            plane.start(timeout=self.args.cluster_timeout)
        except ControlPlaneError as exc:
            raise RunError(f"the local control plane did not start: {exc}") from None
        self.plane = plane
        self.kubeconfig = str(plane.kubeconfig)
        say(f"cluster: local control plane ready at {plane.server} ({time.monotonic() - t0:.1f} s)")

    def kubectl(self, *args: str, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
        return kubectl(self.kubeconfig, *args, timeout=timeout)

    def must(self, *args: str) -> str:
        done = self.kubectl(*args)
        if done.returncode != 0:
            raise RunError(
                f"kubectl {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}"
            )
        return done.stdout

    def apply(self) -> None:
        for line in self.must("apply", "-f", str(CRDS)).splitlines():
            say(f"  {line}")
        self.must("wait", "--for=condition=Established", *CRD_NAMES, "--timeout=60s")
        for line in self.must("apply", "-f", str(SAMPLES)).splitlines():
            say(f"  {line}")

    def start_operator(self, qdrant_env: dict[str, str]) -> None:
        port = free_port()
        self.liveness = f"http://127.0.0.1:{port}/healthz"
        cmd = [
            str(KOPF),
            "run",
            "-m",
            "vectorschema.k8s.handlers",
            "--all-namespaces",
            "--standalone",
            f"--liveness={self.liveness}",
        ]
        env = dict(os.environ, KUBECONFIG=self.kubeconfig, PYTHONUNBUFFERED="1", **qdrant_env)
        webhook = self.webhook_port()
        if webhook:
            env["VECTORSCHEMA_WEBHOOK_PORT"] = webhook
            say(f"webhook: served on 127.0.0.1:{webhook}; kubectl apply prints the plan")
            if self.plane is not None and "VECTORSCHEMA_WEBHOOK_CLIENT_CA" not in os.environ:
                # Our API server presents a client certificate of this CA to webhooks:
                # the webhook answers it and nobody else.
                env["VECTORSCHEMA_WEBHOOK_CLIENT_CA"] = str(self.plane.webhook_client_ca_file)
                say("  only the API server may call it (client certificate required)")
        else:
            env.pop("VECTORSCHEMA_WEBHOOK_PORT", None)
        self.operator_log.parent.mkdir(parents=True, exist_ok=True)
        with self.operator_log.open("wb") as log:
            self.operator = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env=env,
                # Its own session: a Ctrl-C in the terminal reaches us only, and we stop it
                # in order. If we die without that, the kernel kills it (Linux).
                start_new_session=True,
                preexec_fn=parent_death_preexec(),
            )
        say(
            f"operator: started (pid {self.operator.pid}); its logs go to "
            f"{shown(self.operator_log)}"
        )
        say(f"  {shlex.join(['kopf', *cmd[1:]])}")

    def webhook_port(self) -> str:
        """The admission webhook's port: the user's ``VECTORSCHEMA_WEBHOOK_PORT`` (``0``
        or empty: none), else a free one when the API server is ours (it reaches
        loopback); a remote cluster's could not call back, so none."""
        chosen = os.environ.get("VECTORSCHEMA_WEBHOOK_PORT")
        if chosen is not None:
            return "" if chosen.strip() in ("", "0") else chosen.strip()
        return str(free_port()) if self.plane is not None else ""

    def check_running(self) -> None:
        assert self.operator is not None
        rc = self.operator.poll()
        if rc is not None:
            raise RunError(
                f"the operator exited early with status {rc}; last lines of "
                f"{shown(self.operator_log)}:\n{log_tail(self.operator_log, LOG_LINES)}"
            )
        if self.plane is not None and not self.plane.running:
            raise RunError(
                f"the local control plane stopped unexpectedly; logs in {self.plane.logs_dir}"
            )

    def operator_healthy(self) -> bool:
        """kopf's liveness endpoint answers: the operator is up (not merely started)."""
        try:
            with urllib.request.urlopen(self.liveness, timeout=2) as resp:
                return bool(resp.status == 200)
        except (OSError, ValueError):
            return False

    def watch_until_ready(self) -> float:
        say(
            f"waiting for {SAMPLE_NAMESPACE}/{SAMPLE_NAME} to be Ready (up to {self.timeout:.0f} s)"
        )
        t0 = time.monotonic()
        last: list[str] | None = None
        obj: dict[str, Any] = {}
        while True:
            self.check_running()
            table = self.kubectl("get", "vns", "-A", timeout=30)
            if table.returncode == 0 and strip_age(table.stdout) != last:
                last = strip_age(table.stdout)
                print(
                    f"\n$ kubectl get vns -A    # after {time.monotonic() - t0:.0f} s", flush=True
                )
                print(table.stdout.rstrip(), flush=True)
            got = self.kubectl(
                "get", VNS, SAMPLE_NAME, "-n", SAMPLE_NAMESPACE, "-o", "json", timeout=30
            )
            if got.returncode == 0:
                with contextlib.suppress(ValueError):
                    obj = json.loads(got.stdout)
                # A Ready left by an earlier run counts once this operator is up, too.
                if is_ready(obj) and self.operator_healthy():
                    return time.monotonic() - t0
            if time.monotonic() - t0 > self.timeout:
                cond = ready_condition(obj)
                state = (
                    f"Ready={cond.get('status')} {cond.get('reason')}: {cond.get('message')}"
                    if cond
                    else "no status yet"
                )
                raise RunError(
                    f"{SAMPLE_NAMESPACE}/{SAMPLE_NAME} is not Ready after {self.timeout:.0f} s "
                    f"({state}); last lines of {shown(self.operator_log)}:\n"
                    f"{log_tail(self.operator_log, LOG_LINES)}"
                )
            time.sleep(1.0)

    def summary(self, took: float) -> None:
        say()
        say(f"{SAMPLE_NAMESPACE}/{SAMPLE_NAME} is Ready ({took:.1f} s after the operator started)")
        for args in (("get", "vns", "-A"), ("get", "vplugin")):
            print(f"\n$ kubectl {' '.join(args)}", flush=True)
            print(self.must(*args).rstrip(), flush=True)
        log = shown(self.operator_log)
        stop = "the operator" + (" and the local control plane" if self.plane else "")
        tail = (
            f"Ctrl-C here stops {stop}."
            if not self.args.once
            else f"(--once: stopping {stop} now.)"
        )
        print(
            "\nTry this, in another terminal:\n"
            f"  {export_line(Path(self.kubeconfig))}\n"
            f"  kubectl describe vns {SAMPLE_NAME} -n {SAMPLE_NAMESPACE}\n"
            "  kubectl get vectorschema -A          # both kinds (their category)\n"
            f"  kubectl edit vns {SAMPLE_NAME} -n {SAMPLE_NAMESPACE}   "
            "# drop a plugin: the plan waits for confirmation\n"
            f"  vectorschema plan -f {shown(SAMPLES)}/     # what the operator would do, offline\n"
            f"  tail -f {log}\n"
            f"{tail}",
            flush=True,
        )

    def wait_until_stopped(self) -> NoReturn:
        while True:
            self.check_running()
            time.sleep(0.5)

    # -- shutdown ------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the operator (SIGTERM, SIGKILL after a grace period), then the control
        plane if we started it. A second Ctrl-C skips the grace period."""
        proc, self.operator = self.operator, None
        if proc is not None and proc.poll() is None:
            say("stopping the operator")
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            deadline = time.monotonic() + OPERATOR_GRACE_SECONDS
            while proc.poll() is None and time.monotonic() < deadline and not self.hurry:
                time.sleep(0.1)
            if proc.poll() is None:
                say("the operator did not stop in time: killing it")
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=10)
        plane, self.plane = self.plane, None
        if plane is not None:
            say("stopping the local control plane")
            plane.stop()
        if self._lock is not None:
            self._lock.close()
            self._lock = None


@contextlib.contextmanager
def signals_as_exceptions(runner: Runner) -> Iterator[None]:
    """SIGTERM raises Stop (SIGINT raises KeyboardInterrupt anyway) while the body runs;
    during the clean-up that follows, either signal only shortens the grace period."""

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise Stop()

    def on_again(signum: int, frame: FrameType | None) -> None:
        runner.hurry = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, on_again)
        signal.signal(signal.SIGINT, on_again)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="run.py",
        description="Cluster (current kubeconfig, else a local control plane), CRDs, "
        "samples and the operator, in the foreground until Ctrl-C.",
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="stop everything once the sample is Ready (exit 0), or exit 1 if it is not",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help=f"operator log and local control plane state (default: {shown(DEFAULT_STATE_DIR)})",
    )
    parser.add_argument(
        "--local-cluster",
        action="store_true",
        help="start the local control plane even if the current kubeconfig reaches a cluster",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds to wait for the sample to be Ready (default: 120)",
    )
    parser.add_argument(
        "--cluster-timeout",
        type=float,
        default=90.0,
        help="seconds to wait for the local control plane (default: 90)",
    )
    args = parser.parse_args(argv)
    runner = Runner(args)
    rc = 1
    try:
        with signals_as_exceptions(runner):
            rc = runner.run()
    except (RunError, OSError) as exc:
        print(f"run: error: {exc}", file=sys.stderr, flush=True)
        rc = 1
    except KeyboardInterrupt:
        print(flush=True)
        say("interrupted (Ctrl-C)")
        rc = 0
    except Stop:
        say("terminated (SIGTERM)")
        rc = 0
    finally:
        runner.close()
    if rc == 0:
        say("stopped")
    return rc


if __name__ == "__main__":
    sys.exit(main())
