"""The control plane: etcd + kube-apiserver + kube-controller-manager as local processes.

Modelled on controller-runtime's envtest, but with a controller-manager so that namespace
deletion, ownerReference garbage collection and service-account tokens work.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import ssl
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from devenv import cleanup
from devenv.errors import ControlPlaneError, NodeUnavailableError, PortInUseError
from devenv.network import GATEWAY, SERVICE_CIDR
from devenv.node import LOCK_TIMEOUT, NODE_CONTROLLERS, Node
from devenv.paths import BUILD_SCRIPT, down_command
from devenv.pki import CertificateAuthority, build_kubeconfig, cert_pem, key_pem, write_private
from devenv.planefiles import audit_flags, write_webhook_client_credentials
from devenv.probes import build_binaries, client_ssl_context, https_get, summarize
from devenv.processes import (
    STOP_GRACE_SECONDS,
    Process,
    ensure_port_free,
    free_port,
    log_tail,
    parent_death_preexec,
)
from devenv.state import PIDS_FILE, any_alive, read_pids

#: Controllers of kube-controller-manager that we run (canonical names of Kubernetes 1.36):
#: namespace deletion, ownerReference garbage collection, the ``default`` ServiceAccount of
#: each namespace, service-account token Secrets, the ``kube-root-ca.crt`` ConfigMaps, and
#: the aggregated ClusterRoles (``aggregate-to-view/edit/admin`` labels fill the built-in
#: ``view``, ``edit`` and ``admin`` roles).
CONTROLLERS = (
    "namespace-controller",
    "clusterrole-aggregation-controller",
    "garbage-collector-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
)
SERVICE_CLUSTER_IP_RANGE = SERVICE_CIDR  # chosen in devenv.network, with the Pod range
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
ADMIN_USER = "vectorschema-admin"
ADMIN_GROUPS = ("system:masters",)


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

    ``node=True`` also starts a real node (:mod:`devenv.node`: containerd, kubelet,
    kube-proxy, kube-scheduler) and waits until it is Ready; the API server then binds the
    Pods' gateway address (:data:`devenv.network.GATEWAY`) instead of 127.0.0.1.
    ``node="auto"`` does so when the host can and otherwise starts the plane alone
    (:attr:`node_unavailable` says why). :attr:`node` is the :class:`~devenv.node.Node`.
    One node runs per machine: a second one waits ``node_lock_timeout`` s for the first to
    stop, then fails (``node=True``) or starts no node (``"auto"``).

    ``audit_log=True`` makes the kube-apiserver write an audit log (JSON lines, level
    Metadata, one line per completed request, every user) to :attr:`audit_log_file`, for
    counting requests by user (off by default).
    """

    def __init__(
        self,
        state_dir: Path,
        bin_dir: Path | None = None,
        *,
        port: int | None = None,
        detached: bool = False,
        audit_log: bool = False,
        node: bool | str = False,
        node_lock_timeout: float = LOCK_TIMEOUT,
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.audit_log = audit_log
        self._bin_dir = Path(bin_dir).resolve() if bin_dir is not None else None
        self._requested_port = port
        self.detached = detached
        self._procs: list[Process] = []
        self._server: str | None = None
        self._etcd_url: str | None = None
        self._ca: CertificateAuthority | None = None
        self._lock = threading.RLock()
        self._want_node = node
        self._node_lock_timeout = node_lock_timeout
        #: The running node (``node=True``/``"auto"``), else ``None``.
        self.node: Node | None = None
        #: Why ``node="auto"`` started no node (``None`` if it did, or was not asked to).
        self.node_unavailable: str | None = None

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
    def webhook_client_ca_file(self) -> Path:
        """PEM file of the CA that signs the certificate the kube-apiserver presents to
        admission webhooks (its own CA, not the cluster's: a cluster user's certificate
        must not pass as the API server's). Give it to the operator as
        ``VECTORSCHEMA_WEBHOOK_CLIENT_CA``."""
        return self.pki_dir / "webhook-client-ca.crt"

    def webhook_client_ca(self) -> CertificateAuthority:
        """The CA of :attr:`webhook_client_ca_file` (to mint certificates in tests)."""
        return CertificateAuthority.load(
            self.webhook_client_ca_file, self.pki_dir / "webhook-client-ca.key"
        )

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

    @property
    def etcd_url(self) -> str:
        """``http://127.0.0.1:<port>``: etcd's client URL (its v3 JSON gateway too)."""
        if self._etcd_url is None:
            raise ControlPlaneError("the control plane has not been started")
        return self._etcd_url

    @property
    def audit_log_file(self) -> Path:
        """The audit log (with ``audit_log=True``): one JSON event per line."""
        return self.logs_dir / "audit.log"

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
                    f"{down_command(self.state_dir)}"
                )
            bin_dir = self.bin_dir
            for name in ("etcd", "kube-apiserver", "kube-controller-manager"):
                if not os.access(bin_dir / name, os.X_OK):
                    raise ControlPlaneError(
                        f"{bin_dir / name} is missing: run {BUILD_SCRIPT} or pass bin_dir=None"
                    )
            cleanup.install_exit_handlers()
            deadline = time.monotonic() + timeout
            attempt = 1
            while True:
                cleanup.register(self)
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
                cleanup.unregister(self)

    def stop(self) -> None:
        """Stop the processes (SIGTERM, SIGKILL after a grace period). Idempotent."""
        with self._lock:
            self._stop_locked()

    def _stop_locked(self) -> None:
        node, self.node = self.node, None
        if node is not None:
            node.stop()
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
        cleanup.unregister(self)
        pids = read_pids(self.state_dir)
        if procs and pids is not None and pids.get("launcher_pid") == os.getpid():
            with contextlib.suppress(OSError):
                (self.state_dir / PIDS_FILE).unlink()

    # -- one component at a time (fault injection) --------------------------------------

    def stop_component(self, name: str, grace: float = STOP_GRACE_SECONDS) -> None:
        """Stop ``etcd``, ``kube-apiserver`` or ``kube-controller-manager`` alone (SIGTERM,
        SIGKILL after ``grace`` s; ``grace=0`` kills at once). The others keep running."""
        with self._lock:
            proc = self._component(name)
            if grace > 0:
                proc.terminate()
            proc.wait_or_kill(grace)

    def start_component(self, name: str, timeout: float = 60.0) -> None:
        """Start a stopped component again with the same binary, flags, ports and data, and
        wait until it serves (etcd ``/health``, kube-apiserver ``/readyz``)."""
        with self._lock:
            proc = self._component(name)
            if proc.running():
                raise ControlPlaneError(f"{name} is already running")
            self._procs.remove(proc)
            # No port check: the old listener's sockets may linger in TIME_WAIT, which the
            # Go servers (SO_REUSEADDR) do not mind.
            self._spawn(name, Path(proc.exe).parent, proc.args, ports={}, append=True)
            self._procs[-1].ports = proc.ports
            deadline = time.monotonic() + timeout
            if name == "etcd":
                self._wait_etcd(self.etcd_url, deadline, timeout)
            elif name == "kube-apiserver":
                pki = self.pki_dir
                ctx = client_ssl_context(self.ca_file, pki / "admin.crt", pki / "admin.key")
                self._wait_http("kube-apiserver /readyz", "/readyz", ctx, deadline, timeout)

    def _component(self, name: str) -> Process:
        for proc in self._procs:
            if proc.name == name:
                return proc
        raise ControlPlaneError(f"no component {name!r} in this control plane")

    # -- start, step by step ------------------------------------------------------------

    def _start(self, bin_dir: Path, deadline: float, timeout: float) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        address = "127.0.0.1"
        if self._want_node:
            node = Node(
                self.state_dir, detached=self.detached, lock_timeout=self._node_lock_timeout
            )
            try:
                node.prepare()  # the bridge and its gateway address exist from here on
                self.node, address = node, GATEWAY
                # The wait for another checkout's node to stop is not start-up time.
                deadline = max(deadline, time.monotonic() + timeout)
            except NodeUnavailableError as exc:
                if self._want_node != "auto":
                    raise
                self.node_unavailable = str(exc)
        if self._requested_port is not None:
            ensure_port_free(self._requested_port, "kube-apiserver secure port")
            api_port = self._requested_port
        else:
            api_port = free_port()
        etcd_port, peer_port = free_port(), free_port()
        while api_port in (etcd_port, peer_port) or etcd_port == peer_port:
            etcd_port, peer_port = free_port(), free_port()
        self._server = f"https://{address}:{api_port}"
        self._write_pki()

        etcd_url = self._etcd_url = f"http://127.0.0.1:{etcd_port}"
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
                # Loopback only; with a node, the Pods' gateway (on the project's bridge,
                # reachable from the host and the Pods only): see devenv.network.GATEWAY.
                f"--bind-address={address}",
                f"--advertise-address={address}",
                f"--cert-dir={pki}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={self.ca_file}",
                # The Node authorizer lets the kubelet (system:node:<name>) see its Pods.
                f"--authorization-mode={'Node,RBAC' if self.node is not None else 'RBAC'}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--allow-privileged=true",
                # ServiceAccount admission stays on: the controller-manager creates the
                # ``default`` ServiceAccount it needs.
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--profiling=false",
                f"--admission-control-config-file={self.state_dir / 'admission-config.yaml'}",
                *self._audit_flags(),
                *(
                    self.node.apiserver_flags(self._ca, self.ca_file)
                    if self.node and self._ca
                    else []
                ),
            ],
            ports={api_port: "kube-apiserver secure port"},
        )
        ctx = client_ssl_context(self.ca_file, pki / "admin.crt", pki / "admin.key")
        self._wait_http("kube-apiserver /readyz", "/readyz", ctx, deadline, timeout)

        self._spawn(
            "kube-controller-manager",
            bin_dir,
            [
                f"--kubeconfig={self.kubeconfig}",
                f"--controllers={','.join(self.controllers)}",
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
        if self.node is not None:
            # containerd, kubelet and friends need more than the plane's own time.
            self.node.start(
                self.server, self._ca_or_load(), self.ca_file, max(deadline, time.monotonic() + 120)
            )
            self._write_pids()

    @property
    def controllers(self) -> tuple[str, ...]:
        """The controllers kube-controller-manager runs (more with a node)."""
        return CONTROLLERS + NODE_CONTROLLERS if self.node is not None else CONTROLLERS

    def _ca_or_load(self) -> CertificateAuthority:
        if self._ca is None:
            self._ca = CertificateAuthority.load(self.ca_file, self.pki_dir / "ca.key")
        return self._ca

    def _audit_flags(self) -> list[str]:
        return audit_flags(self.state_dir, self.audit_log_file) if self.audit_log else []

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
            ip_addresses=["127.0.0.1", "10.0.0.1", GATEWAY],
            server=True,
        )
        write_private(pki / "apiserver.key", key_pem(key))
        write_private(pki / "apiserver.crt", cert_pem(cert))
        sa_key = pki / "sa.key"
        if not sa_key.is_file():
            rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            write_private(sa_key, key_pem(rsa_key))
            pub = rsa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            write_private(pki / "sa.pub", pub)
        self._write_webhook_client_credentials()
        cert, key = self._ca.issue(ADMIN_USER, organizations=ADMIN_GROUPS)
        write_private(pki / "admin.key", key_pem(key))
        write_private(pki / "admin.crt", cert_pem(cert))
        write_private(
            self.kubeconfig,
            build_kubeconfig(
                server=self.server,
                ca_pem=cert_pem(self._ca.cert),
                cert_pem=cert_pem(cert),
                key_pem=key_pem(key),
                user=ADMIN_USER,
            ).encode(),
        )

    def _write_webhook_client_credentials(self) -> None:
        write_webhook_client_credentials(self.state_dir, self.pki_dir, self.webhook_client_ca_file)

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
        write_private(
            path,
            build_kubeconfig(
                server=self.server,
                ca_pem=cert_pem(self._ca.cert),
                cert_pem=cert_pem(cert),
                key_pem=key_pem(key),
                user=name,
            ).encode(),
        )
        return path

    def _spawn(
        self, name: str, bin_dir: Path, args: list[str], ports: dict[int, str], append: bool = False
    ) -> None:
        for port, purpose in ports.items():
            ensure_port_free(port, purpose)
        exe = str(bin_dir / name)
        log = self.log_file(name)
        # PR_SET_PDEATHSIG fires when the *thread* that forked exits: only trust it for the
        # main thread, which lives as long as the process.
        main_thread = threading.current_thread() is threading.main_thread()
        preexec = parent_death_preexec() if main_thread and not self.detached else None
        with log.open("ab" if append else "wb") as log_fh:
            popen = subprocess.Popen(
                [exe, *args],
                stdin=subprocess.DEVNULL,
                stdout=log_fh,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir,
                start_new_session=True,
                preexec_fn=preexec,
            )
        self._procs.append(Process(name, exe, popen, log, ports, args))
        self._write_pids()

    def _write_pids(self) -> None:
        data = {
            "launcher_pid": os.getpid(),
            "detached": self.detached,
            "server": self._server,
            "kubeconfig": str(self.kubeconfig),
            "ca_file": str(self.ca_file),
            "node": self.node.name if self.node is not None else None,
            "processes": [{"name": p.name, "pid": p.pid, "exe": p.exe} for p in self._procs],
        }
        write_private(self.state_dir / PIDS_FILE, (json.dumps(data, indent=2) + "\n").encode())

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
                last = f"HTTP {status}: {summarize(body)}"
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
