"""The project's dev tooling: a real local Kubernetes control plane and its helpers.

Modules, each one job (every one imports only the standard library, ``cryptography`` and
modules listed above it):

- ``errors``: :class:`ControlPlaneError` and :class:`PortInUseError`.
- ``paths``: the repository, ``tools/controlplane/build.sh``, the default state dir.
- ``pki``: the CA, serving and client certificates, kubeconfigs.
- ``processes``: ports, log tails, PIDs, stopping, :func:`parent_death_preexec`.
- ``probes``: HTTPS probes of the API server; :func:`build_binaries` runs ``build.sh``.
- ``network``: the node's ranges, bridge, local Service route and FORWARD guard (the rule
  that no packet leaves this machine).
- ``nodehost``: can this host run a node, the machine-wide node lock, clean-up of a node.
- ``state``: detached clusters found again through ``<state-dir>/pids.json``.
- ``ociimage``: OCI image archives of static binaries (the node's pause and test images).
- ``node``: :class:`Node`, containerd + kubelet + kube-proxy + kube-scheduler.
- ``planefiles``: the admission configuration (the webhook client certificate), the audit policy.
- ``controlplane``: :class:`ControlPlane`, etcd + kube-apiserver + kube-controller-manager
  (and a :class:`Node` with ``node=True``).
- ``cli``: ``python -m devenv up|status|down`` (``make cluster``, ``make cluster-down``).

``tools`` is on the import path of pytest (``pythonpath``), mypy (``mypy_path``) and of
``tools/run.py`` (its own directory); the Makefile sets ``PYTHONPATH=tools`` for the CLI.

Library use::

    with ControlPlane(Path(".state/cluster")) as cp:
        os.environ["KUBECONFIG"] = str(cp.kubeconfig)
        reader = cp.user_kubeconfig("alice", ["readers"])

    with ControlPlane(Path(".state/cluster"), node=True) as cp:   # + a Ready node
        cp.node.import_image(Path("image.oci.tar"))   # into the node's containerd
        # Pods: image vectorschema.local/... with imagePullPolicy: Never (no registry)

The e2e fixture ``node_cluster`` (tests/e2e/conftest.py) is a session-wide plane + node.
"""

from devenv.cli import export_line, main
from devenv.controlplane import ControlPlane
from devenv.errors import ControlPlaneError, NodeBusyError, NodeUnavailableError, PortInUseError
from devenv.node import Node
from devenv.nodeconfig import NETTEST_IMAGE, PAUSE_IMAGE
from devenv.nodehost import cannot_run_node
from devenv.pki import CertificateAuthority, build_kubeconfig
from devenv.probes import build_binaries
from devenv.processes import (
    ensure_port_free,
    free_port,
    log_tail,
    parent_death_preexec,
    pid_alive,
    stop_pid,
)
from devenv.state import cluster_ready, read_pids, stop_state_dir

__all__ = [
    "NETTEST_IMAGE",
    "PAUSE_IMAGE",
    "CertificateAuthority",
    "ControlPlane",
    "ControlPlaneError",
    "Node",
    "NodeBusyError",
    "NodeUnavailableError",
    "PortInUseError",
    "build_binaries",
    "build_kubeconfig",
    "cannot_run_node",
    "cluster_ready",
    "ensure_port_free",
    "export_line",
    "free_port",
    "log_tail",
    "main",
    "parent_death_preexec",
    "pid_alive",
    "read_pids",
    "stop_pid",
    "stop_state_dir",
]
