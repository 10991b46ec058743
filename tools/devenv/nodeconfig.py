"""The configuration files of the local node's components (pure: text and dicts).

Every path lives under the node's directory (:class:`NodePaths`; containerd's socket in
the machine's node directory), every address in the project's own ranges
(:mod:`devenv.network`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devenv import network
from devenv.nodehost import RUN_DIR
from devenv.paths import TOOLS

NODE_NAME = "vectorschema-node"
KUBELET_PORT = 10250
PAUSE_IMAGE = "vectorschema.local/pause:1"
NETTEST_IMAGE = "vectorschema.local/nettest:1"


IMAGE_SOURCES = ("go.mod", "pause/main.go", "nettest/main.go")


def images_dir(bin_dir: Path) -> Path:
    """Where ``tools/node/build.sh`` put this checkout's pause and nettest binaries: keyed
    by a hash of their sources, the same one the script computes."""
    sources = TOOLS / "node" / "images"
    digest = hashlib.sha256(b"".join((sources / s).read_bytes() for s in IMAGE_SOURCES))
    return bin_dir / f"images-{digest.hexdigest()[:12]}"


@dataclass(frozen=True)
class NodePaths:
    """Where the node keeps things, under ``<state-dir>/node``."""

    root: Path

    @property
    def containerd_socket(self) -> Path:
        """In the machine's node directory: a unix socket path may not exceed 104 bytes
        (with ``.ttrpc``), which a state dir under pytest's tmp path would; one node per
        machine makes a fixed path safe."""
        return RUN_DIR / "containerd.sock"

    @property
    def resolv_conf(self) -> Path:
        return self.root / "resolv.conf"


def can_lower_oom_score() -> bool:
    """Whether this process holds CAP_SYS_RESOURCE (bit 24 of CapEff), which lowering an
    OOM score below the parent's needs."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) & (1 << 24))
    except (OSError, ValueError):
        pass
    return False


def cni_conflist(paths: NodePaths) -> dict[str, Any]:
    """The CNI network: a bridge with host-local IPAM in the Pod range, and portmap."""
    d = paths.root
    return {
        "cniVersion": "1.0.0",
        "name": "vectorschema",
        "plugins": [
            {
                "type": "bridge",
                "bridge": network.BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": network.POD_CIDR, "gateway": network.GATEWAY}]],
                    # No default route in a Pod: only the Service range goes to the
                    # gateway (kube-proxy's DNAT), the Pod range is on the bridge.
                    "routes": [{"dst": network.SERVICE_CIDR}],
                    "dataDir": str(d / "cni/ipam"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def containerd_config(paths: NodePaths, bin_dir: Path) -> str:
    d = paths.root
    return CONTAINERD_CONFIG.format(
        root=d / "containerd/root",
        state=d / "containerd/state",
        tmp=d / "containerd/tmp",
        sock=paths.containerd_socket,
        pause=PAUSE_IMAGE,
        certs=d / "certs.d",
        runc=bin_dir / "runc",
        runc_root=d / "runc",
        cni_bin=bin_dir / "cni",
        cni_conf=d / "cni/net.d",
        opt=d / "opt",
        restrict_oom="false" if can_lower_oom_score() else "true",
    )


def kubelet_config(paths: NodePaths, ca_file: Path, crt: Path, key: Path) -> dict[str, Any]:
    d = paths.root
    cgroup_v1 = not Path("/sys/fs/cgroup/cgroup.controllers").is_file()
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": network.GATEWAY,
        "port": KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzPort": 0,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca_file)},
        },
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(crt),
        "tlsPrivateKeyFile": str(key),
        "cgroupDriver": "cgroupfs",
        # cgroup v1 is in maintenance mode: the kubelet refuses it unless told.
        "failCgroupV1": not cgroup_v1,
        "cgroupsPerQOS": True,
        "cgroupRoot": "/",
        "containerRuntimeEndpoint": f"unix://{paths.containerd_socket}",
        "podLogsDir": str(d / "pod-logs"),
        "resolvConf": str(paths.resolv_conf),
        "clusterDomain": "cluster.local",
        "failSwapOn": False,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        # Imported images can never be pulled again: no image garbage collection.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "registerNode": True,
    }


def kube_proxy_config(kubeconfig: Path) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "clusterCIDR": network.POD_CIDR,
        "hostnameOverride": NODE_NAME,
        "healthzBindAddress": "",
        "metricsBindAddress": "",
        "nodePortAddresses": [f"{network.GATEWAY}/32"],
        # No global sysctl of the host is changed: no route_localnet, no conntrack sizes.
        "iptables": {"localhostNodePorts": False, "minSyncPeriod": "1s"},
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
    }


CONTAINERD_CONFIG = """\
version = 3
root = "{root}"
state = "{state}"
temp = "{tmp}"
disabled_plugins = [
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.blockfile",
  "io.containerd.snapshotter.v1.erofs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
  "io.containerd.nri.v1.nri",
]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[plugins]
  [plugins.'io.containerd.internal.v1.opt']
    path = "{opt}"
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = "overlayfs"
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = "{pause}"
    [plugins.'io.containerd.cri.v1.images'.registry]
      config_path = "{certs}"
  [plugins.'io.containerd.cri.v1.runtime']
    netns_mounts_under_state_dir = true
    # Without CAP_SYS_RESOURCE (some VMs and containers) no process may lower its OOM
    # score: keep the kubelet's negative scores at containerd's own instead of failing.
    restrict_oom_score_adj = {restrict_oom}
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = "runc"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = "{runc}"
          Root = "{runc_root}"
          SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ["{cni_bin}"]
      conf_dir = "{cni_conf}"
      max_conf_num = 1
  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
"""
