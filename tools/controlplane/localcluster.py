#!/usr/bin/env python3
"""A real, local Kubernetes control plane: etcd + kube-apiserver + kube-controller-manager.

Modelled on controller-runtime's envtest, but with a controller-manager so that namespace
deletion, ownerReference garbage collection and service-account tokens work. The binaries
come from ``build.sh`` (built from Go modules, cached outside the repository).

Library use::

    with ControlPlane(Path(".state/cluster")) as cp:
        os.environ["KUBECONFIG"] = str(cp.kubeconfig)
        reader = cp.user_kubeconfig("alice", ["readers"])

Command line::

    python tools/controlplane/localcluster.py up [--state-dir DIR] [--foreground]
    python tools/controlplane/localcluster.py status [--state-dir DIR]
    python tools/controlplane/localcluster.py down [--state-dir DIR]

``up`` prints ``export KUBECONFIG=... PATH=...:$PATH`` as its last line, so
``eval "$(python tools/controlplane/localcluster.py up)"`` configures the shell.

Only the standard library and ``cryptography`` are used.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import collections
import contextlib
import datetime
import errno
import http.client
import ipaddress
import json
import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
BUILD_SCRIPT = HERE / "build.sh"
DEFAULT_STATE_DIR = REPO / ".state" / "cluster"

#: Controllers of kube-controller-manager that we run (canonical names of Kubernetes 1.36):
#: namespace deletion, ownerReference garbage collection, the ``default`` ServiceAccount of
#: each namespace, service-account token Secrets and the ``kube-root-ca.crt`` ConfigMaps.
CONTROLLERS = (
    "namespace-controller",
    "garbage-collector-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
)
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
ADMIN_USER = "vectorschema-admin"
ADMIN_GROUPS = ("system:masters",)
STOP_GRACE_SECONDS = 10.0
LOG_TAIL_LINES = 30
PIDS_FILE = "pids.json"


class ControlPlaneError(RuntimeError):
    """Any failure to build, start, reach or stop the local control plane."""


class PortInUseError(ControlPlaneError):
    """A port the control plane needs is taken."""


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------


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


def kubectl_dir() -> Path:
    """The directory holding the ``kubectl`` of this virtualenv (next to the interpreter)."""
    return Path(sys.executable).parent


def export_line(kubeconfig: Path) -> str:
    """The shell line that points kubectl at the cluster."""
    return (
        f"export KUBECONFIG={shlex.quote(str(kubeconfig))} "
        f"PATH={shlex.quote(str(kubectl_dir()))}:$PATH"
    )


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------
# Certificates
# --------------------------------------------------------------------------------------

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class CertificateAuthority:
    """A self-signed CA; signs the serving certificate and every client certificate."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, common_name: str = "vectorschema-local-ca") -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, cert_file: Path, key_file: Path) -> CertificateAuthority:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ControlPlaneError(f"{key_file}: expected an EC private key")
        return cls(cert, key)

    def save(self, cert_file: Path, key_file: Path) -> None:
        _write_private(key_file, _key_pem(self.key))
        _write_private(cert_file, _cert_pem(self.cert))

    def issue(
        self,
        common_name: str,
        *,
        organizations: Sequence[str] = (),
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str] = (),
        server: bool = False,
        days: int = 365,
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """A leaf certificate: a client certificate, or a serving one when ``server``."""
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        now = _now()
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
        )
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(self.key, hashes.SHA256()), key


def build_kubeconfig(
    *,
    server: str,
    ca_pem: bytes,
    cert_pem: bytes,
    key_pem: bytes,
    user: str,
    context: str = "vectorschema-local",
) -> str:
    """A kubeconfig with embedded client-certificate credentials (JSON is valid YAML)."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": context,
                "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(cert_pem),
                    "client-key-data": b64(key_pem),
                },
            }
        ],
        "contexts": [
            {"name": context, "context": {"cluster": context, "user": user, "namespace": "default"}}
        ],
        "current-context": context,
        "preferences": {},
    }
    return json.dumps(config, indent=2) + "\n"


# --------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------


def _parent_death_preexec() -> Callable[[], None] | None:
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
class _Process:
    name: str
    exe: str
    popen: subprocess.Popen[bytes]
    log: Path
    ports: dict[int, str]

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


# Control planes of this process that must be stopped at interpreter exit or on SIGTERM.
_LIVE: set[ControlPlane] = set()
_LIVE_LOCK = threading.Lock()
_handlers_installed = False


def _stop_all_live() -> None:
    with _LIVE_LOCK:
        planes = list(_LIVE)
    for plane in planes:
        with contextlib.suppress(Exception):
            plane.stop()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _stop_all_live()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_exit_handlers() -> None:
    """atexit always; SIGTERM only from the main thread and if nobody else handles it."""
    global _handlers_installed
    if _handlers_installed:
        return
    _handlers_installed = True
    atexit.register(_stop_all_live)
    if threading.current_thread() is threading.main_thread():
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, _on_sigterm)
        # Python's own SIGINT handler raises KeyboardInterrupt, which unwinds through
        # ``with``, ``finally`` and atexit; only SIG_DFL would kill us without clean-up.
        if signal.getsignal(signal.SIGINT) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGINT, _on_sigterm)


# --------------------------------------------------------------------------------------
# HTTP probes
# --------------------------------------------------------------------------------------


def https_get(
    server: str, path: str, context: ssl.SSLContext, timeout: float = 5.0
) -> tuple[int, bytes]:
    """GET ``server + path``; returns (status, body). Raises OSError on connection errors."""
    url = server.removeprefix("https://")
    host, _, port = url.partition(":")
    conn = http.client.HTTPSConnection(host, int(port or 443), context=context, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Accept": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _summarize(body: bytes) -> str:
    """The failing checks of a /readyz answer, or the start of any other body."""
    text = body.decode("utf-8", "replace")
    failed = [ln[3:].split(" failed", 1)[0] for ln in text.splitlines() if ln.startswith("[-]")]
    if failed:
        return "failed checks: " + ", ".join(failed)
    return " ".join(text.split())[:300]


def _client_ssl_context(ca_file: Path, cert_file: Path, key_file: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca_file))
    ctx.load_cert_chain(str(cert_file), str(key_file))
    return ctx


# --------------------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------------------


def build_binaries(script: Path = BUILD_SCRIPT) -> Path:
    """Run ``build.sh`` (progress on our stderr); return the bin dir (its last stdout line)."""
    if not script.is_file():
        raise ControlPlaneError(f"build script not found: {script}")
    proc = subprocess.Popen(
        ["bash", str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    tail: collections.deque[str] = collections.deque(maxlen=20)
    assert proc.stderr is not None and proc.stdout is not None
    for line in proc.stderr:
        sys.stderr.write(line)
        sys.stderr.flush()
        if line.strip():
            tail.append(line.rstrip("\n"))
    out = proc.stdout.read()
    rc = proc.wait()
    if rc != 0:
        last = tail[-1].removeprefix("controlplane: ") if tail else f"exit status {rc}"
        raise ControlPlaneError(f"building the control plane failed: {last}")
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    if not lines:
        raise ControlPlaneError(f"{script} printed no bin directory")
    return Path(lines[-1])


# --------------------------------------------------------------------------------------
# The control plane
# --------------------------------------------------------------------------------------


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager on loopback, state in ``state_dir``.

    ``start()`` wipes the etcd data of a previous run in the same ``state_dir`` (the CA and
    keys are kept, so kubeconfigs of earlier runs keep their credentials but not the port).

    ``detached=True`` leaves the processes running when this Python process exits (they run
    in their own sessions); stop them with :func:`stop_state_dir`. Otherwise they are
    stopped by :meth:`stop`, at interpreter exit, on SIGTERM, and (Linux, when started from
    the main thread) by the kernel with SIGKILL if this process dies in any other way.

    ``port`` fixes the kube-apiserver port (default: a free one); etcd always gets free
    ports. Everything listens on 127.0.0.1 only.
    """

    def __init__(
        self,
        state_dir: Path,
        bin_dir: Path | None = None,
        *,
        port: int | None = None,
        detached: bool = False,
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self._bin_dir = Path(bin_dir).resolve() if bin_dir is not None else None
        self._requested_port = port
        self.detached = detached
        self._procs: list[_Process] = []
        self._server: str | None = None
        self._ca: CertificateAuthority | None = None
        self._lock = threading.RLock()

    # -- paths --------------------------------------------------------------------------

    @property
    def pki_dir(self) -> Path:
        return self.state_dir / "pki"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def ca_file(self) -> Path:
        """PEM file of the CA that signs the serving and all client certificates."""
        return self.pki_dir / "ca.crt"

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (client certificate, group ``system:masters``)."""
        return self.state_dir / "admin.kubeconfig"

    @property
    def server(self) -> str:
        """``https://127.0.0.1:<port>`` of the running kube-apiserver."""
        if self._server is None:
            raise ControlPlaneError("the control plane has not been started")
        return self._server

    @property
    def bin_dir(self) -> Path:
        """Directory with the binaries (runs ``build.sh`` on first use if not given)."""
        if self._bin_dir is None:
            self._bin_dir = build_binaries()
        return self._bin_dir

    def log_file(self, component: str) -> Path:
        """Log file of ``etcd``, ``kube-apiserver`` or ``kube-controller-manager``."""
        return self.logs_dir / f"{component}.log"

    @property
    def running(self) -> bool:
        return bool(self._procs) and all(p.running() for p in self._procs)

    # -- lifecycle ----------------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, timeout: float = 90.0) -> None:
        """Start all three processes and wait (up to ``timeout`` s) until they are usable."""
        with self._lock:
            if self._procs:
                raise ControlPlaneError("this control plane is already started")
            existing = read_pids(self.state_dir)
            if existing is not None and any_alive(existing):
                raise ControlPlaneError(
                    f"a control plane from {self.state_dir} is already running "
                    f"(server {existing.get('server')}); stop it first with: "
                    f"python3 {Path(__file__).resolve()} down "
                    f"--state-dir {self.state_dir}"
                )
            bin_dir = self.bin_dir
            for name in ("etcd", "kube-apiserver", "kube-controller-manager"):
                if not os.access(bin_dir / name, os.X_OK):
                    raise ControlPlaneError(
                        f"{bin_dir / name} is missing: run {BUILD_SCRIPT} or pass bin_dir=None"
                    )
            _install_exit_handlers()
            deadline = time.monotonic() + timeout
            attempt = 1
            while True:
                with _LIVE_LOCK:
                    _LIVE.add(self)
                try:
                    self._start(bin_dir, deadline, timeout)
                    break
                except PortInUseError:
                    self._stop_locked()
                    # Free ports are picked before the processes bind them: someone else
                    # may take one in between. Retry with new ports, unless fixed by us.
                    if self._requested_port is not None or attempt >= 3:
                        raise
                    attempt += 1
                except BaseException:
                    self._stop_locked()
                    raise
            if self.detached:
                with _LIVE_LOCK:
                    _LIVE.discard(self)

    def stop(self) -> None:
        """Stop the processes (SIGTERM, SIGKILL after a grace period). Idempotent."""
        with self._lock:
            self._stop_locked()

    def _stop_locked(self) -> None:
        procs, self._procs = self._procs, []
        # Controller-manager and apiserver first, etcd last (the apiserver needs it to drain).
        front = [p for p in procs if p.name != "etcd"]
        for proc in front:
            proc.terminate()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for proc in front:
            proc.wait_or_kill(deadline - time.monotonic())
        for proc in procs:
            if proc.name == "etcd":
                proc.terminate()
                proc.wait_or_kill(STOP_GRACE_SECONDS)
        with _LIVE_LOCK:
            _LIVE.discard(self)
        pids = read_pids(self.state_dir)
        if procs and pids is not None and pids.get("launcher_pid") == os.getpid():
            with contextlib.suppress(OSError):
                (self.state_dir / PIDS_FILE).unlink()

    # -- start, step by step ------------------------------------------------------------

    def _start(self, bin_dir: Path, deadline: float, timeout: float) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        if self._requested_port is not None:
            ensure_port_free(self._requested_port, "kube-apiserver secure port")
            api_port = self._requested_port
        else:
            api_port = free_port()
        etcd_port, peer_port = free_port(), free_port()
        while api_port in (etcd_port, peer_port) or etcd_port == peer_port:
            etcd_port, peer_port = free_port(), free_port()
        self._server = f"https://127.0.0.1:{api_port}"
        self._write_pki()

        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        data_dir = self.state_dir / "etcd"
        shutil.rmtree(data_dir, ignore_errors=True)
        self._spawn(
            "etcd",
            bin_dir,
            [
                "--name=default",
                f"--data-dir={data_dir}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
            ports={etcd_port: "etcd client", peer_port: "etcd peer"},
        )
        self._wait_etcd(etcd_url, deadline, timeout)

        pki = self.pki_dir
        self._spawn(
            "kube-apiserver",
            bin_dir,
            [
                f"--etcd-servers={etcd_url}",
                f"--secure-port={api_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--cert-dir={pki}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={self.ca_file}",
                "--authorization-mode=RBAC",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--allow-privileged=true",
                # ServiceAccount admission stays on: the controller-manager creates the
                # ``default`` ServiceAccount it needs.
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--profiling=false",
            ],
            ports={api_port: "kube-apiserver secure port"},
        )
        ctx = _client_ssl_context(self.ca_file, pki / "admin.crt", pki / "admin.key")
        self._wait_http("kube-apiserver /readyz", "/readyz", ctx, deadline, timeout)

        self._spawn(
            "kube-controller-manager",
            bin_dir,
            [
                f"--kubeconfig={self.kubeconfig}",
                f"--controllers={','.join(CONTROLLERS)}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={self.ca_file}",
                "--leader-elect=false",
                "--secure-port=0",
                "--use-service-account-credentials=false",
                "--profiling=false",
            ],
            ports={},
        )
        self._wait_http(
            "the default ServiceAccount (kube-controller-manager)",
            "/api/v1/namespaces/default/serviceaccounts/default",
            ctx,
            deadline,
            timeout,
        )

    def _write_pki(self) -> None:
        pki = self.pki_dir
        pki.mkdir(parents=True, exist_ok=True)
        ca_crt, ca_key = self.ca_file, pki / "ca.key"
        if ca_crt.is_file() and ca_key.is_file():
            self._ca = CertificateAuthority.load(ca_crt, ca_key)
        else:
            self._ca = CertificateAuthority.create()
            self._ca.save(ca_crt, ca_key)
        cert, key = self._ca.issue(
            "kube-apiserver",
            dns_names=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"],
            ip_addresses=["127.0.0.1", "10.0.0.1"],
            server=True,
        )
        _write_private(pki / "apiserver.key", _key_pem(key))
        _write_private(pki / "apiserver.crt", _cert_pem(cert))
        sa_key = pki / "sa.key"
        if not sa_key.is_file():
            rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            _write_private(sa_key, _key_pem(rsa_key))
            pub = rsa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            _write_private(pki / "sa.pub", pub)
        cert, key = self._ca.issue(ADMIN_USER, organizations=ADMIN_GROUPS)
        _write_private(pki / "admin.key", _key_pem(key))
        _write_private(pki / "admin.crt", _cert_pem(cert))
        _write_private(
            self.kubeconfig,
            build_kubeconfig(
                server=self.server,
                ca_pem=_cert_pem(self._ca.cert),
                cert_pem=_cert_pem(cert),
                key_pem=_key_pem(key),
                user=ADMIN_USER,
            ).encode(),
        )

    def user_kubeconfig(self, name: str, groups: list[str]) -> Path:
        """Mint a client certificate for user ``name`` in ``groups``; return its kubeconfig.

        The user has no permissions beyond those of ``system:authenticated`` until RBAC
        grants them.
        """
        if self._ca is None:
            ca_crt, ca_key = self.ca_file, self.pki_dir / "ca.key"
            if not (ca_crt.is_file() and ca_key.is_file()):
                raise ControlPlaneError("the control plane has not been started")
            self._ca = CertificateAuthority.load(ca_crt, ca_key)
        cert, key = self._ca.issue(name, organizations=groups)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        path = self.state_dir / "users" / f"{safe}.kubeconfig"
        _write_private(
            path,
            build_kubeconfig(
                server=self.server,
                ca_pem=_cert_pem(self._ca.cert),
                cert_pem=_cert_pem(cert),
                key_pem=_key_pem(key),
                user=name,
            ).encode(),
        )
        return path

    def _spawn(self, name: str, bin_dir: Path, args: list[str], ports: dict[int, str]) -> None:
        for port, purpose in ports.items():
            ensure_port_free(port, purpose)
        exe = str(bin_dir / name)
        log = self.log_file(name)
        # PR_SET_PDEATHSIG fires when the *thread* that forked exits: only trust it for the
        # main thread, which lives as long as the process.
        main_thread = threading.current_thread() is threading.main_thread()
        preexec = _parent_death_preexec() if main_thread and not self.detached else None
        with log.open("wb") as log_fh:
            popen = subprocess.Popen(
                [exe, *args],
                stdin=subprocess.DEVNULL,
                stdout=log_fh,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir,
                start_new_session=True,
                preexec_fn=preexec,
            )
        self._procs.append(_Process(name, exe, popen, log, ports))
        self._write_pids()

    def _write_pids(self) -> None:
        data = {
            "launcher_pid": os.getpid(),
            "detached": self.detached,
            "server": self._server,
            "kubeconfig": str(self.kubeconfig),
            "ca_file": str(self.ca_file),
            "processes": [{"name": p.name, "pid": p.pid, "exe": p.exe} for p in self._procs],
        }
        _write_private(self.state_dir / PIDS_FILE, (json.dumps(data, indent=2) + "\n").encode())

    def _check_alive(self) -> None:
        for proc in self._procs:
            rc = proc.popen.poll()
            if rc is None:
                continue
            tail = log_tail(proc.log)
            if "address already in use" in tail:
                ports = proc.ports
                used = [f"{p} ({what})" for p, what in ports.items() if str(p) in tail]
                which = ", ".join(used) or ", ".join(f"{p} ({w})" for p, w in ports.items())
                raise PortInUseError(
                    f"{proc.name} could not listen: port {which} is already in use"
                )
            raise ControlPlaneError(
                f"{proc.name} exited with status {rc} during start-up; last lines of "
                f"{proc.log}:\n{tail}"
            )

    def _wait_etcd(self, url: str, deadline: float, timeout: float) -> None:
        host, _, port = url.removeprefix("http://").partition(":")
        while True:
            self._check_alive()
            conn = http.client.HTTPConnection(host, int(port), timeout=2)
            try:
                conn.request("GET", "/health")
                resp = conn.getresponse()
                body = resp.read()
                if resp.status == 200 and b'"true"' in body:
                    return
            except OSError:
                pass
            finally:
                conn.close()
            if time.monotonic() > deadline:
                self._timeout("etcd /health", timeout, self.log_file("etcd"))
            time.sleep(0.1)

    def _wait_http(
        self, what: str, path: str, ctx: ssl.SSLContext, deadline: float, timeout: float
    ) -> None:
        last = "no answer"
        while True:
            self._check_alive()
            try:
                status, body = https_get(self.server, path, ctx, timeout=5)
                if status == 200:
                    return
                last = f"HTTP {status}: {_summarize(body)}"
            except (OSError, http.client.HTTPException) as exc:
                last = str(exc)
            if time.monotonic() > deadline:
                self._timeout(what, timeout, self.log_file("kube-apiserver"), last)
            time.sleep(0.25)

    def _timeout(self, what: str, timeout: float, log: Path, last: str = "") -> None:
        detail = f" (last answer: {last.strip()})" if last else ""
        raise ControlPlaneError(
            f"{what} not ready within {timeout:.0f} s{detail}; last lines of {log}:\n"
            f"{log_tail(log)}"
        )


# --------------------------------------------------------------------------------------
# Detached clusters: the pids file
# --------------------------------------------------------------------------------------


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
        ctx = _client_ssl_context(pki / "ca.crt", pki / "admin.crt", pki / "admin.key")
        status, _ = https_get(pids["server"], "/readyz", ctx, timeout=5)
    except (OSError, ssl.SSLError, http.client.HTTPException):
        return None
    return pids if status == 200 else None


def stop_state_dir(state_dir: Path) -> bool:
    """Stop the processes recorded in ``state_dir``; True if any was running."""
    pids = read_pids(state_dir)
    if pids is None:
        return False
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
    return was_running


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def _state_lock(state_dir: Path) -> Iterator[None]:
    """Serialise ``up``/``down`` on one state dir."""
    import fcntl

    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / "lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _info(msg: str) -> None:
    print(f"localcluster: {msg}", file=sys.stderr, flush=True)


def _cmd_up(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir.resolve()
    bin_dir: Path | None = args.bin_dir
    if args.foreground:
        with _state_lock(state_dir):
            plane = ControlPlane(state_dir, bin_dir, port=args.port)
            t0 = time.monotonic()
            plane.start(timeout=args.timeout)
        _info(f"ready in {time.monotonic() - t0:.1f} s at {plane.server}; Ctrl-C stops it")
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

    with _state_lock(state_dir):
        ready = cluster_ready(state_dir)
        if ready is not None:
            _info(f"reusing the running control plane at {ready['server']}")
            print(export_line(Path(ready["kubeconfig"])), flush=True)
            return 0
        if stop_state_dir(state_dir):
            _info("stopped an unhealthy earlier control plane from this state dir")
        plane = ControlPlane(state_dir, bin_dir, port=args.port, detached=True)
        t0 = time.monotonic()
        plane.start(timeout=args.timeout)
    _info(f"ready in {time.monotonic() - t0:.1f} s at {plane.server} (logs: {plane.logs_dir})")
    _info(f"stop it with: {Path(sys.executable).name} {__file__} down --state-dir {state_dir}")
    print(export_line(plane.kubeconfig), flush=True)
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir.resolve()
    with _state_lock(state_dir):
        if stop_state_dir(state_dir):
            _info(f"stopped the control plane of {state_dir}")
        else:
            _info(f"no control plane running from {state_dir}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir.resolve()
    ready = cluster_ready(state_dir)
    if ready is not None:
        print(f"running and ready: {ready['server']} (kubeconfig {ready['kubeconfig']})")
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
    up.set_defaults(func=_cmd_up)
    down = sub.add_parser("down", help="stop the control plane of a state dir")
    add_state_dir(down)
    down.set_defaults(func=_cmd_down)
    status = sub.add_parser("status", help="exit 0 if running and ready")
    add_state_dir(status)
    status.set_defaults(func=_cmd_status)

    args = parser.parse_args(argv)
    try:
        rc: int = args.func(args)
    except ControlPlaneError as exc:
        print(f"localcluster: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return rc


if __name__ == "__main__":
    sys.exit(main())
