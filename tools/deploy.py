#!/usr/bin/env python3
"""`make deploy`: the operator as users run it, on the local node.

1. A cluster with a node: the one `make cluster` runs (state in ``.state/cluster``),
   started with its node when none runs. A cluster without a Ready node is an error (the
   operator's Pods would never start): the reason `make cluster` gave is shown.
2. The image: `make image` (the repository's Dockerfile, built without a Docker daemon),
   imported into the node's containerd.
3. A Qdrant both replicas reach: qdrantlite (tools/devenv/qdrantlite.py, Qdrant's REST
   API over qdrant-client's local mode) as a Deployment and Service in namespace
   ``qdrant``, run by the operator image (which has qdrant-client) from a ConfigMap.
   Pods get no DNS on this node, so the operator is given the Service's ClusterIP.
4. ``helm upgrade --install`` of charts/vectorschema into ``vectorschema-system`` with that
   image (``pullPolicy: Never``: it is in containerd already, and no registry is reachable)
   and that Qdrant URL; then a wait until the Deployment is Available.
5. What to try, and, as the last line, the ``export KUBECONFIG=... PATH=...`` line of
   `make cluster`. The cluster keeps running: `make cluster-down` stops it.

The functions here are also the in-cluster e2e tests' way to install
(tests/e2e/test_incluster.py), so the tests install exactly what `make deploy` does.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TOOLS = REPO / "tools"
DEFAULT_STATE_DIR = REPO / ".state" / "cluster"  # make cluster's (devenv.paths)
BIN = Path(sys.executable).parent
KUBECTL = BIN / "kubectl"
CHART = REPO / "charts" / "vectorschema"
QDRANTLITE = TOOLS / "devenv" / "qdrantlite.py"
HELM_BUILD = TOOLS / "helm" / "build.sh"

NAMESPACE = "vectorschema-system"
RELEASE = "vectorschema"
QDRANT_NAMESPACE = "qdrant"
QDRANT_NAME = "qdrant"
QDRANT_PORT = 6333
#: The operator's and qdrantlite's user (the Dockerfile's USER).
UID = 10001


class DeployError(Exception):
    """A failure to report in one paragraph, without a traceback."""


def say(msg: str) -> None:
    print(f"deploy: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# kubectl and helm
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kube:
    """kubectl and helm on one cluster (its admin kubeconfig)."""

    kubeconfig: Path

    def run(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(KUBECTL), "--kubeconfig", str(self.kubeconfig), *args],
            input=input, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise DeployError(
                f"kubectl {' '.join(args)} exited with {done.returncode}: "
                f"{(done.stderr or done.stdout).strip()}"
            )
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-o", "json").stdout)

    def apply(self, *docs: Mapping[str, Any]) -> None:
        self.run("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                       "items": list(docs)}))  # fmt: skip

    def helm(
        self, *args: str, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(helm_binary()), *args, "--kubeconfig", str(self.kubeconfig)],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise DeployError(
                f"helm {' '.join(args)} exited with {done.returncode}: "
                f"{(done.stderr or done.stdout).strip()}"
            )
        return done


def helm_binary() -> Path:
    """The pinned helm (tools/helm/build.sh builds it once into ~/.cache/vectorschema)."""
    done = subprocess.run(["bash", str(HELM_BUILD)], capture_output=True, text=True)
    if done.returncode != 0:
        raise DeployError(f"tools/helm/build.sh failed: {done.stderr.strip()[-2000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------
# qdrantlite in the cluster
# --------------------------------------------------------------------------------------


def hardened() -> dict[str, Any]:
    """The container security context the chart gives the operator, for qdrantlite too."""
    return {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def qdrant_objects(image: str, namespace: str = QDRANT_NAMESPACE) -> list[dict[str, Any]]:
    """Namespace, ConfigMap (the script), Deployment and Service of qdrantlite."""
    labels = {
        "app.kubernetes.io/name": QDRANT_NAME,
        "app.kubernetes.io/part-of": "vectorschema-dev",
    }
    meta = {"name": QDRANT_NAME, "namespace": namespace, "labels": labels}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta,
            "data": {"qdrantlite.py": QDRANTLITE.read_text()},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta,
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                # One store: never two servers at once.
                "strategy": {"type": "Recreate"},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "automountServiceAccountToken": False,
                        "securityContext": {"runAsNonRoot": True, "runAsUser": UID},
                        "containers": [
                            {
                                "name": "qdrant",
                                "image": image,
                                "imagePullPolicy": "Never",
                                "command": ["python", "/opt/qdrantlite/qdrantlite.py"],
                                "args": ["--host", "0.0.0.0", "--port", str(QDRANT_PORT)],
                                "ports": [{"name": "http", "containerPort": QDRANT_PORT}],
                                "readinessProbe": {
                                    "httpGet": {"path": "/readyz", "port": "http"},
                                    "periodSeconds": 2,
                                },
                                "securityContext": hardened(),
                                "resources": {
                                    "requests": {"cpu": "20m", "memory": "96Mi"},
                                    "limits": {"memory": "512Mi"},
                                },
                                "volumeMounts": [
                                    {"name": "script", "mountPath": "/opt/qdrantlite"},
                                ],
                            }
                        ],
                        "volumes": [{"name": "script", "configMap": {"name": QDRANT_NAME}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": {
                "selector": labels,
                "ports": [{"name": "http", "port": QDRANT_PORT, "targetPort": "http"}],
            },
        },
    ]


def deploy_qdrant(kube: Kube, image: str, timeout: float = 300) -> str:
    """qdrantlite running and Available; its URL (the Service's ClusterIP: no DNS here)."""
    kube.apply(*qdrant_objects(image))
    wait_available(kube, QDRANT_NAMESPACE, QDRANT_NAME, timeout)
    ip = kube.json("get", "service", QDRANT_NAME, "-n", QDRANT_NAMESPACE)["spec"]["clusterIP"]
    return f"http://{ip}:{QDRANT_PORT}"


# --------------------------------------------------------------------------------------
# The chart
# --------------------------------------------------------------------------------------


def split_image(ref: str) -> tuple[str, str]:
    """repository and tag of ``ref`` (``host:port/name:tag``)."""
    repo, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return ref, "latest"
    return repo, tag


def chart_values(image: str, qdrant_url: str, **extra: Any) -> dict[str, Any]:
    """The values `make deploy` installs with: the local image, never pulled; the Qdrant."""
    repository, tag = split_image(image)
    values: dict[str, Any] = {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "qdrant": {"url": qdrant_url},
    }
    values.update(extra)
    return values


def helm_install(
    kube: Kube,
    values: Mapping[str, Any],
    *,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
    values_file: Path | None = None,
) -> str:
    """``helm upgrade --install`` (idempotent); helm's output."""
    path = values_file or (kube.kubeconfig.parent / f"{release}-values.json")
    path.write_text(json.dumps(values, indent=2))
    return kube.helm(
        "upgrade", "--install", release, str(CHART), "--namespace", namespace,
        "--create-namespace", "--values", str(path),
    ).stdout  # fmt: skip


def wait_available(kube: Kube, namespace: str, name: str, timeout: float) -> None:
    """The Deployment Available with every replica updated and ready; on timeout, what its
    Pods say (conditions, Events, last log lines)."""
    deadline = time.monotonic() + timeout
    while True:
        dep = kube.json("get", "deployment", name, "-n", namespace)
        status, spec = dep.get("status", {}), dep["spec"]
        conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
        want = spec.get("replicas", 1)
        if (
            conditions.get("Available") == "True"
            and status.get("observedGeneration") == dep["metadata"]["generation"]
            and status.get("updatedReplicas") == want
            and status.get("readyReplicas") == want
            and status.get("replicas") == want
        ):
            return
        if time.monotonic() > deadline:
            raise DeployError(
                f"deployment {namespace}/{name} not Available after {timeout:.0f} s\n"
                + explain_pods(kube, namespace, dep["spec"]["selector"]["matchLabels"])
            )
        time.sleep(1)


def explain_pods(kube: Kube, namespace: str, labels: Mapping[str, str]) -> str:
    selector = ",".join(f"{k}={v}" for k, v in labels.items())
    lines = [kube.run("get", "pods", "-n", namespace, "-l", selector, "-o", "wide",
                      check=False).stdout]  # fmt: skip
    events = kube.run("get", "events", "-n", namespace, "--sort-by=.lastTimestamp",
                      check=False).stdout.splitlines()[-15:]  # fmt: skip
    lines += events
    logs = kube.run("logs", "-n", namespace, "-l", selector, "--tail=15", "--all-containers",
                    "--prefix", check=False)  # fmt: skip
    lines.append(logs.stdout or logs.stderr)
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# The cluster, the node and the image (tools/devenv and tools/image)
# --------------------------------------------------------------------------------------


def tools_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(TOOLS)}


def cluster_up(state_dir: Path | None) -> Path:
    """`make cluster` (reused when running): the admin kubeconfig."""
    args = [sys.executable, "-m", "devenv", "up", "--node", "yes"]
    if state_dir is not None:
        args += ["--state-dir", str(state_dir)]
    done = subprocess.run(args, capture_output=True, text=True, env=tools_env(), cwd=REPO)
    for line in done.stderr.splitlines():
        say(line.removeprefix("localcluster: "))
    if done.returncode != 0:
        raise DeployError(f"the local cluster did not start:\n{done.stderr.strip()}")
    export = done.stdout.strip().splitlines()[-1]
    words = shlex.split(export.removeprefix("export "))
    kubeconfig = dict(w.split("=", 1) for w in words)["KUBECONFIG"]
    return Path(kubeconfig)


def ready_nodes(kube: Kube) -> list[str]:
    nodes = kube.json("get", "nodes")["items"]
    return [
        n["metadata"]["name"]
        for n in nodes
        if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
    ]


def wait_for_node(kube: Kube, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        ready = ready_nodes(kube)
        if ready:
            return ready[0]
        if time.monotonic() > deadline:
            raise DeployError(
                "the cluster has no Ready node, so the operator's Pods cannot run. A running "
                "control plane cannot get a node afterwards: `make cluster-down`, then "
                "`make deploy` starts both (as root, with cgroups; see the lines above)"
            )
        time.sleep(1)


def build_image() -> tuple[str, Path]:
    """`make image` (tools/image; cached by content): the image name and its OCI archive."""
    from image import build_image as build  # tools/image

    built = build()
    return str(built.name), Path(built.archive)


def import_image(state_dir: Path, archive: Path) -> None:
    """The archive into the containerd of the node of ``state_dir`` (namespace k8s.io)."""
    from devenv.node import Node  # the node of `make cluster`

    node = Node.attach(state_dir)
    if node is None:
        raise DeployError(
            f"the node running on this machine is not the one of {state_dir}: another "
            "checkout's cluster holds it (only one node runs per machine); stop that one "
            "(make cluster-down there), then make cluster-down && make deploy here"
        )
    node.import_image(archive)


# --------------------------------------------------------------------------------------
# make deploy
# --------------------------------------------------------------------------------------


def export_line(kubeconfig: Path) -> str:
    return f"export KUBECONFIG={shlex.quote(str(kubeconfig))} PATH={shlex.quote(str(BIN))}:$PATH"


def try_these(image: str, qdrant_url: str) -> str:
    return f"""
vectorschema is Available in {NAMESPACE}: 2 replicas of {image} (one active, one standby),
the admission webhook behind its Service, metrics at svc/{RELEASE}-metrics:8080.
Qdrant: qdrantlite at {qdrant_url} (Qdrant's REST API over qdrant-client's local mode, in
namespace {QDRANT_NAMESPACE}; see README, "Install").

Try (after the export line below):
  kubectl -n {NAMESPACE} get pods -o wide
  kubectl apply -f manifests/samples/                 # a tenant, three Plugins, one Namespace
  kubectl get vns -A -w                               # Ready once the active Pod reconciled it
  kubectl describe vns -n tenant-acme catalog         # Events from vectorschema-operator
  kubectl -n {NAMESPACE} logs deploy/{RELEASE} --tail=20
  kubectl -n {NAMESPACE} delete pod -l app.kubernetes.io/name=vectorschema   # failover
Stop everything: make cluster-down
"""


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--state-dir", type=Path, default=None, help="the cluster's (make cluster's)")
    p.add_argument("--image", default=None, help="use this image, already in the node's containerd")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds for each wait")
    args = p.parse_args(argv)
    try:
        kubeconfig = cluster_up(args.state_dir)
        kube = Kube(kubeconfig)
        node = wait_for_node(kube, args.timeout)
        say(f"node {node} is Ready")
        if args.image:
            image = args.image
        else:
            say("building the image (make image)")
            image, archive = build_image()
            say(f"importing {image} into the node's containerd")
            import_image(args.state_dir or DEFAULT_STATE_DIR, archive)
        say("starting qdrantlite (the Qdrant both replicas share)")
        qdrant_url = deploy_qdrant(kube, image, args.timeout)
        say(f"helm upgrade --install {RELEASE} charts/vectorschema -n {NAMESPACE}")
        helm_install(kube, chart_values(image, qdrant_url))
        t0 = time.monotonic()
        wait_available(kube, NAMESPACE, RELEASE, args.timeout)
        say(f"deployment/{RELEASE} is Available ({time.monotonic() - t0:.0f} s after install)")
    except DeployError as exc:
        print(f"deploy: error: {exc}", file=sys.stderr)
        return 1
    print(kube.run("get", "pods", "-n", NAMESPACE, "-o", "wide").stdout, file=sys.stderr)
    print(try_these(image, qdrant_url), file=sys.stderr, flush=True)
    print(export_line(kubeconfig), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
