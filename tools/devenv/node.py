"""A real Kubernetes node beside the local control plane: containerd (with runc and the CNI
plugins), the kubelet, kube-proxy (iptables mode) and the kube-scheduler, as local processes.

Started through the control plane (it must exist before the API server starts, which binds
the Pods' gateway address, see :mod:`devenv.network`)::

    from devenv import ControlPlane, NodeUnavailableError

    with ControlPlane(Path(".state/cluster"), node=True) as cp:   # plane + a Ready node
        node = cp.node                                # devenv.Node
        node.import_image(Path("image.oci.tar"))      # ctr -n k8s.io images import
        node.nettest_image                            # "vectorschema.local/nettest:1"
        node.ctr("images", "ls")                      # any ctr command on its containerd

    Node.attach(Path(".state/cluster"))               # the running node of make cluster

``ControlPlane.start`` raises :class:`NodeUnavailableError` (a ``ControlPlaneError``) with
the reason when the host cannot run a node (:func:`devenv.nodehost.cannot_run_node`: not
root, no cgroups); ``node="auto"`` starts the plane alone then (``cp.node`` is ``None``,
``cp.node_unavailable`` says why). Only one node runs per machine: a second one waits up to
``node_lock_timeout`` seconds (env ``VECTORSCHEMA_NODE_LOCK_TIMEOUT``, default 1800) for the
first to stop. Pods must use images imported into the node (``imagePullPolicy: Never``):
no registry is reachable, and containerd is configured to pull from nowhere.

Layout under ``<state-dir>/node``: containerd's root, state, socket and config, runc's
state, network namespaces, the CNI configuration and IPAM data, the kubelet's root, Pod
logs, the certificates of the node's components and the local image archives.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from devenv import network, nodeconfig, nodehost, ociimage
from devenv.errors import ControlPlaneError, NodeUnavailableError
from devenv.nodeconfig import NETTEST_IMAGE, NODE_NAME, PAUSE_IMAGE, NodePaths
from devenv.paths import TOOLS
from devenv.pki import CertificateAuthority, build_kubeconfig, cert_pem, key_pem, write_private
from devenv.probes import build_binaries, client_ssl_context, https_get
from devenv.processes import STOP_GRACE_SECONDS, Process, log_tail, parent_death_preexec

NODE_BUILD_SCRIPT = TOOLS / "node" / "build.sh"
LOCK_TIMEOUT = float(os.environ.get("VECTORSCHEMA_NODE_LOCK_TIMEOUT", "1800"))
#: Controllers a node needs on top of the plain plane's (Deployments, ReplicaSets,
#: Services' endpoints, Jobs, PodDisruptionBudgets, StatefulSets, DaemonSets, Pod GC).
NODE_CONTROLLERS = (
    "deployment-controller",
    "replicaset-controller",
    "replicationcontroller-controller",
    "endpoints-controller",
    "endpointslice-controller",
    "endpointslice-mirroring-controller",
    "job-controller",
    "cronjob-controller",
    "ttl-after-finished-controller",
    "disruption-controller",
    "statefulset-controller",
    "daemonset-controller",
    "pod-garbage-collector-controller",
    # Lifts the ``node.kubernetes.io/not-ready`` taint the kubelet registers with.
    "node-lifecycle-controller",
)


class Node:
    """The node of one control plane's state dir (see the module docstring)."""

    def __init__(self, state_dir: Path, *, detached: bool, lock_timeout: float = LOCK_TIMEOUT):
        self.state_dir = Path(state_dir).resolve()
        self.node_dir = self.state_dir / "node"
        self.paths = NodePaths(self.node_dir)
        self.detached = detached
        self.lock_timeout = lock_timeout
        self.name = NODE_NAME
        self.pause_image = PAUSE_IMAGE
        self.nettest_image = NETTEST_IMAGE
        self._bin_dir: Path | None = None
        self._procs: list[Process] = []
        self._record: dict[str, Any] | None = None

    @classmethod
    def attach(cls, state_dir: Path) -> Node | None:
        """The running node of ``state_dir`` (e.g. a detached one of ``make cluster``), to
        import images into or stop; ``None`` if this machine's node is not that one."""
        record = nodehost.read_record()
        if record is None or record.get("state_dir") != str(Path(state_dir).resolve()):
            return None
        node = cls(state_dir, detached=True)
        node._bin_dir = Path(str(record["bin_dir"]))
        return node

    # -- paths --------------------------------------------------------------------------

    @property
    def bin_dir(self) -> Path:
        if self._bin_dir is None:
            self._bin_dir = build_binaries(NODE_BUILD_SCRIPT)
        return self._bin_dir

    @property
    def containerd_socket(self) -> Path:
        return self.paths.containerd_socket

    @property
    def pki_dir(self) -> Path:
        return self.node_dir / "pki"

    def log_file(self, component: str) -> Path:
        return self.state_dir / "logs" / f"{component}.log"

    def image_archive(self, which: str) -> Path:
        """The OCI archive of ``pause`` or ``nettest`` (built from the cached binaries)."""
        return self.node_dir / "images" / f"{which}.oci.tar"

    # -- lifecycle ----------------------------------------------------------------------

    def prepare(self) -> None:
        """Before the API server starts: check the host, build, lock, clean, network up."""
        reason = nodehost.cannot_run_node()
        if reason is not None:
            raise NodeUnavailableError(reason)
        bin_dir = self.bin_dir
        fd = nodehost.acquire_lock(self.lock_timeout, "localcluster")
        try:
            stale = nodehost.read_record()
            if stale is not None:
                nodehost.scrub(stale)
            nodehost.unmount_all(self.node_dir)
            shutil.rmtree(self.node_dir, ignore_errors=True)
            self.node_dir.mkdir(parents=True)
            self._record = {
                "state_dir": str(self.state_dir),
                "node_dir": str(self.node_dir),
                "bin_dir": str(bin_dir),
                "containerd_address": str(self.containerd_socket),
                "launcher_pid": os.getpid(),
                "sysctls": network.read_sysctls(),
                "processes": [],
            }
            nodehost.write_record(self._record)
            images = nodeconfig.images_dir(bin_dir)
            self._spawn("node-lock", images / "pause", [], pass_fds=(fd,))
        except BaseException:
            os.close(fd)
            self.stop()
            raise
        os.close(fd)  # the holder keeps the lock
        try:
            network.up()
        except BaseException:
            self.stop()
            raise

    def apiserver_flags(self, ca: CertificateAuthority, ca_file: Path) -> list[str]:
        """kube-apiserver flags for ``kubectl logs/exec`` (its client certificate for the
        kubelet, the CA of the kubelet's serving certificate)."""
        cert, key = self._issue(ca, "kube-apiserver-kubelet-client", ["system:masters"])
        return [
            f"--kubelet-client-certificate={cert}",
            f"--kubelet-client-key={key}",
            f"--kubelet-certificate-authority={ca_file}",
            "--kubelet-preferred-address-types=InternalIP",
        ]

    def start(self, server: str, ca: CertificateAuthority, ca_file: Path, deadline: float) -> None:
        """After the API server is ready: containerd, images, kubelet, kube-proxy, scheduler;
        wait until the node is Ready."""
        bin_dir = self.bin_dir
        (self.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        self._start_containerd(bin_dir, deadline)
        images = nodeconfig.images_dir(bin_dir)
        for which, name, entry in (
            ("pause", PAUSE_IMAGE, ["/pause"]),
            ("nettest", NETTEST_IMAGE, ["/nettest"]),
        ):
            archive = self.image_archive(which)
            ociimage.write_archive(archive, name, {which: images / which}, entry)
            self.import_image(archive)
        kubeconfigs = {
            who: self._kubeconfig(server, ca, who, user, groups)
            for who, user, groups in (
                ("kubelet", f"system:node:{NODE_NAME}", ["system:nodes"]),
                ("kube-proxy", "system:kube-proxy", []),
                ("kube-scheduler", "system:kube-scheduler", []),
            )
        }
        self._start_kubelet(bin_dir, ca, ca_file, kubeconfigs["kubelet"])
        self._spawn(
            "kube-proxy",
            bin_dir / "kube-proxy",
            [f"--config={self._kube_proxy_config(kubeconfigs['kube-proxy'])}"],
        )
        self._guard_first(deadline)
        self._spawn(
            "kube-scheduler",
            bin_dir / "kube-scheduler",
            [
                f"--kubeconfig={kubeconfigs['kube-scheduler']}",
                f"--authentication-kubeconfig={kubeconfigs['kube-scheduler']}",
                f"--authorization-kubeconfig={kubeconfigs['kube-scheduler']}",
                "--leader-elect=false",
                "--secure-port=0",
                "--profiling=false",
            ],
        )
        self._wait_ready(server, ca_file, deadline)

    def stop(self) -> None:
        """Stop every process and remove every trace (mounts, rules, bridge). Idempotent."""
        procs, self._procs = self._procs, []
        for name in nodehost.STOP_ORDER[:-1]:
            for proc in procs:
                if proc.name == name:
                    proc.terminate()
                    proc.wait_or_kill(STOP_GRACE_SECONDS)
        record = self._record or nodehost.read_record()
        self._record = None
        if record is not None and record.get("state_dir") == str(self.state_dir):
            nodehost.scrub(record)
        for proc in procs:
            proc.wait_or_kill(0)

    @property
    def running(self) -> bool:
        return bool(self._procs) and all(p.running() for p in self._procs)

    # -- images -------------------------------------------------------------------------

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``ctr --address <socket> -n k8s.io ARGS`` (the Kubernetes namespace)."""
        cmd = [
            str(self.bin_dir / "ctr"),
            "--address",
            str(self.containerd_socket),
            "-n",
            "k8s.io",
            *args,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise ControlPlaneError(
                f"ctr {' '.join(args)} failed: {(proc.stderr or proc.stdout).strip()}"
            )
        return proc

    def import_image(self, archive: Path) -> list[str]:
        """Import an OCI (or docker-save) archive into the node's containerd, for the
        kubelet (namespace ``k8s.io``); return the image names now present."""
        before = set(self.images())
        self.ctr("images", "import", "--all-platforms", str(Path(archive).resolve()))
        after = self.images()
        return [i for i in after if i not in before] or after

    def images(self) -> list[str]:
        out = self.ctr("images", "ls", "-q").stdout
        return [
            ln.strip() for ln in out.splitlines() if ln.strip() and not ln.startswith("sha256:")
        ]

    # -- components ---------------------------------------------------------------------

    def _issue(
        self, ca: CertificateAuthority, user: str, groups: list[str], **kw: Any
    ) -> tuple[Path, Path]:
        cert, key = ca.issue(user, organizations=groups, **kw)
        safe = user.replace(":", "_")
        crt_file, key_file = self.pki_dir / f"{safe}.crt", self.pki_dir / f"{safe}.key"
        write_private(crt_file, cert_pem(cert))
        write_private(key_file, key_pem(key))
        return crt_file, key_file

    def _kubeconfig(
        self, server: str, ca: CertificateAuthority, who: str, user: str, groups: list[str]
    ) -> Path:
        cert, key = ca.issue(user, organizations=groups)
        path = self.pki_dir / f"{who}.kubeconfig"
        text = build_kubeconfig(
            server=server,
            ca_pem=cert_pem(ca.cert),
            cert_pem=cert_pem(cert),
            key_pem=key_pem(key),
            user=user,
        )
        write_private(path, text.encode())
        return path

    def _start_containerd(self, bin_dir: Path, deadline: float) -> None:
        d = self.node_dir
        for sub in (
            "containerd/root",
            "containerd/state",
            "containerd/tmp",
            "runc",
            "cni/net.d",
            "cni/ipam",
            "opt",
            "certs.d/_default",
        ):
            (d / sub).mkdir(parents=True, exist_ok=True)
        # Pulls go nowhere: every registry host is mapped to a closed loopback port, so a
        # missing image fails at once instead of resolving a name or leaving the machine.
        (d / "certs.d/_default/hosts.toml").write_text('server = "http://127.0.0.1:9"\n')
        conflist = nodeconfig.cni_conflist(self.paths)
        (d / "cni/net.d/10-vectorschema.conflist").write_text(json.dumps(conflist, indent=2))
        config = nodeconfig.containerd_config(self.paths, bin_dir)
        (d / "containerd/config.toml").write_text(config)
        self._spawn(
            "containerd", bin_dir / "containerd", [f"--config={d / 'containerd/config.toml'}"]
        )
        while True:
            self._check_alive()
            if self.containerd_socket.exists() and self.ctr("version", check=False).returncode == 0:
                return
            if time.monotonic() > deadline:
                raise ControlPlaneError(self._with_log("containerd did not start", "containerd"))
            time.sleep(0.2)

    def _start_kubelet(
        self, bin_dir: Path, ca: CertificateAuthority, ca_file: Path, kubeconfig: Path
    ) -> None:
        d = self.node_dir
        crt, key = self._issue(
            ca, NODE_NAME, [], dns_names=[NODE_NAME], ip_addresses=[network.GATEWAY], server=True
        )
        # Pods get no outside resolver: their only nameserver is their own loopback.
        (d / "resolv.conf").write_text(
            "# the local node has no DNS: no name leaves this machine\nnameserver 127.0.0.1\n"
        )
        config = nodeconfig.kubelet_config(self.paths, ca_file, crt, key)
        path = d / "kubelet-config.json"
        path.write_text(json.dumps(config, indent=2))
        self._spawn(
            "kubelet",
            bin_dir / "kubelet",
            [
                f"--config={path}",
                f"--kubeconfig={kubeconfig}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={network.GATEWAY}",
                f"--root-dir={d / 'kubelet'}",
                f"--cert-dir={self.pki_dir / 'kubelet'}",
            ],
        )

    def _kube_proxy_config(self, kubeconfig: Path) -> Path:
        config = nodeconfig.kube_proxy_config(kubeconfig)
        path = self.node_dir / "kube-proxy-config.json"
        path.write_text(json.dumps(config, indent=2))
        return path

    def _guard_first(self, deadline: float) -> None:
        """kube-proxy puts its FORWARD jumps first (one of them accepts marked packets):
        once they exist, move the guard back in front of them. kube-proxy only re-adds a
        jump that is missing, so the guard stays first."""
        while not any("KUBE-FORWARD" in ln for ln in network.forward_rules()):
            self._check_alive()
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    self._with_log("kube-proxy set no FORWARD rules in time", "kube-proxy")
                )
            time.sleep(0.2)
        network.install_guard()

    def _spawn(self, name: str, exe: Path, args: list[str], pass_fds: tuple[int, ...] = ()) -> None:
        log = self.log_file(name)
        log.parent.mkdir(parents=True, exist_ok=True)
        main_thread = threading.current_thread() is threading.main_thread()
        preexec = parent_death_preexec() if main_thread and not self.detached else None
        env = dict(os.environ)
        # containerd finds its shim, the shim finds runc through the PATH; iptables & co
        # come from the host.
        env["PATH"] = os.pathsep.join(
            [str(self.bin_dir), env.get("PATH", ""), "/usr/sbin", "/sbin"]
        )
        with log.open("wb") as fh:
            popen = subprocess.Popen(
                [str(exe), *args],
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                cwd=self.node_dir,
                env=env,
                start_new_session=True,
                preexec_fn=preexec,
                pass_fds=pass_fds,
            )
        self._procs.append(Process(name, str(exe), popen, log, {}, args))
        if self._record is not None:
            self._record["processes"].append({"name": name, "pid": popen.pid, "exe": str(exe)})
            nodehost.write_record(self._record)

    def _with_log(self, what: str, component: str) -> str:
        log = self.log_file(component)
        return f"{what}; last lines of {log}:\n{log_tail(log)}"

    def _check_alive(self) -> None:
        for proc in self._procs:
            rc = proc.popen.poll()
            if rc is not None:
                raise ControlPlaneError(
                    self._with_log(
                        f"{proc.name} exited with status {rc} during start-up", proc.name
                    )
                )

    def _wait_ready(self, server: str, ca_file: Path, deadline: float) -> None:
        pki = self.state_dir / "pki"
        ctx = client_ssl_context(ca_file, pki / "admin.crt", pki / "admin.key")
        last = "not registered"
        while True:
            self._check_alive()
            with contextlib.suppress(OSError, ValueError):
                status, body = https_get(server, f"/api/v1/nodes/{NODE_NAME}", ctx)
                if status == 200:
                    conds = {
                        c["type"]: c
                        for c in json.loads(body).get("status", {}).get("conditions", [])
                    }
                    ready = conds.get("Ready", {})
                    taints = json.loads(body).get("spec", {}).get("taints", [])
                    if ready.get("status") == "True" and not taints:
                        return
                    last = (
                        f"Ready={ready.get('status')}: {ready.get('message', '')}; taints {taints}"
                    )
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    self._with_log(f"node {NODE_NAME} not Ready in time ({last})", "kubelet")
                )
            time.sleep(0.5)
