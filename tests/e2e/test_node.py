"""The local node: Ready, Pods with Pod IPs, ClusterIP Services from the host and from Pods,
the in-cluster API server, ``kubectl logs``/``exec``, and the rule that no packet leaves
this machine (asserted on the rules themselves: nothing is ever aimed outward).

Every address used here is a Pod or Service address of the project's own ranges, or the
bridge's gateway; the test image is the node's ``nettest`` (tools/node/images/nettest).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.conftest import wait_for
from tests.e2e.operator_env import run_kubectl

from devenv import (
    ControlPlane,
    ControlPlaneError,
    Node,
    NodeUnavailableError,
    network,
    nodehost,
    ociimage,
)
from devenv.nodeconfig import NODE_NAME, images_dir
from devenv.pki import CertificateAuthority, cert_pem, key_pem

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def node(node_cluster: ControlPlane) -> Node:
    assert node_cluster.node is not None
    return node_cluster.node


@pytest.fixture(scope="module")
def kc(node_cluster: ControlPlane) -> Any:
    def _kc(*args: str, input: str | None = None, check: bool = True) -> Any:
        return run_kubectl(node_cluster.kubeconfig, *args, input=input, check=check)

    return _kc


@pytest.fixture(scope="module")
def ns(kc: Any) -> Iterator[str]:
    name = f"node-{uuid.uuid4().hex[:6]}"
    kc("create", "namespace", name)
    yield name
    kc("delete", "namespace", name, "--wait=false", check=False)


def pod_manifest(name: str, ns: str, args: list[str], labels: dict[str, str] | None = None) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
            "spec": {
                "restartPolicy": "Never" if args[0] != "serve" else "Always",
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {
                        "name": "main",
                        "image": "vectorschema.local/nettest:1",
                        "imagePullPolicy": "Never",
                        "args": args,
                    }
                ],
            },
        }
    )


def pod(kc: Any, ns: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(kc("get", "pod", name, "-n", ns, "-o", "json").stdout)
    return result


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        body: bytes = resp.read()
        return body.decode()


@pytest.fixture(scope="module")
def web(kc: Any, ns: str) -> dict[str, str]:
    """A serving Pod and its ClusterIP Service: names and addresses."""
    kc("apply", "-f", "-", input=pod_manifest("web", ns, ["serve"], {"app": "web"}))
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    kc("apply", "-f", "-", input=json.dumps(service))
    running = wait_for(
        lambda: (p := pod(kc, ns, "web"))["status"].get("phase") == "Running" and p,
        timeout=120,
        message="the web Pod Running",
    )
    cluster_ip = kc("get", "service", "web", "-n", ns, "-o", "jsonpath={.spec.clusterIP}").stdout
    return {"pod_ip": running["status"]["podIP"], "cluster_ip": cluster_ip.strip()}


def test_node_is_ready_with_its_components(kc: Any) -> None:
    node = json.loads(kc("get", "node", NODE_NAME, "-o", "json").stdout)
    ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
    assert ready == "True"
    info = node["status"]["nodeInfo"]
    assert info["kubeletVersion"] == "v1.36.3"
    assert info["containerRuntimeVersion"].startswith("containerd://2.")
    assert node["status"]["addresses"][0]["address"] == network.GATEWAY


def test_pod_gets_a_pod_ip_the_host_reaches(web: dict[str, str]) -> None:
    assert ipaddress.ip_address(web["pod_ip"]) in ipaddress.ip_network(network.POD_CIDR)
    assert http_get(f"http://{web['pod_ip']}:8080/") == "web\n"


def test_cluster_ip_service_from_the_host(web: dict[str, str]) -> None:
    assert ipaddress.ip_address(web["cluster_ip"]) in ipaddress.ip_network(network.SERVICE_CIDR)
    # From the host: kube-proxy's OUTPUT DNAT (the way the API server reaches webhooks).
    assert wait_for(lambda: http_get(f"http://{web['cluster_ip']}/"), timeout=60) == "web\n"


def test_cluster_ip_service_from_another_pod_via_exec(
    kc: Any, ns: str, web: dict[str, str]
) -> None:
    kc("apply", "-f", "-", input=pod_manifest("client", ns, ["sleep"]))
    wait_for(
        lambda: pod(kc, ns, "client")["status"].get("phase") == "Running",
        timeout=120,
        message="the client Pod Running",
    )
    # kubectl exec: the API server reaches the kubelet with its client certificate.
    out = wait_for(
        lambda: (
            (
                r := kc(
                    "exec",
                    "-n",
                    ns,
                    "client",
                    "--",
                    "/nettest",
                    "get",
                    f"http://{web['cluster_ip']}/",
                    check=False,
                )
            ).returncode
            == 0
            and r.stdout
        ),
        timeout=60,
        message="the Service from the client Pod",
    )
    assert out == "200 OK\nweb\n"


def test_pod_reaches_the_api_server_through_the_kubernetes_service(kc: Any, ns: str) -> None:
    kc("apply", "-f", "-", input=pod_manifest("api", ns, ["apiserver"]))
    phase = wait_for(
        lambda: (
            pod(kc, ns, "api")["status"].get("phase") in ("Succeeded", "Failed")
            and pod(kc, ns, "api")["status"]["phase"]
        ),
        timeout=120,
        message="the api Pod to finish",
    )
    logs = kc("logs", "-n", ns, "api").stdout  # kubectl logs through the kubelet
    assert phase == "Succeeded", logs
    assert logs.startswith("200 OK\n")
    assert json.loads(logs.split("\n", 1)[1])["gitVersion"] == "v1.36.3"


def test_no_packet_leaves_the_machine_rules(node: Node, web: dict[str, str]) -> None:
    # The guard is the first thing FORWARD does, ahead of kube-proxy's accepts.
    forward = network.forward_rules()
    assert forward[0] == f"-A FORWARD -i {network.BRIDGE} -j {network.GUARD_CHAIN}"
    assert f"-A FORWARD -s {network.POD_CIDR} -j {network.GUARD_CHAIN}" in forward[:2]
    guard = network.guard_rules()
    assert f"-A {network.GUARD_CHAIN} -d {network.POD_CIDR} -j RETURN" in guard
    assert f"-A {network.GUARD_CHAIN} -d {network.SERVICE_CIDR} -j RETURN" in guard
    assert guard[-1].startswith(f"-A {network.GUARD_CHAIN} -m comment") and guard[-1].endswith(
        "-j DROP"
    )
    # An unused Service address is local to the host (refused, never routed out); only
    # the routing table is asked.
    assert network.route_type("10.0.0.250") == "local"
    assert network.route_type(web["cluster_ip"]) == "local"
    # Pods have no resolver but their own loopback.
    resolv = (node.node_dir / "resolv.conf").read_text()
    assert [ln for ln in resolv.splitlines() if ln.startswith("nameserver")] == [
        "nameserver 127.0.0.1"
    ]


def test_import_image_into_the_node(node: Node, tmp_path: Path) -> None:
    nettest = images_dir(node.bin_dir) / "nettest"
    archive = tmp_path / "imported.oci.tar"
    name = f"vectorschema.local/imported:{uuid.uuid4().hex[:6]}"
    ociimage.write_archive(archive, name, {"nettest": nettest}, ["/nettest"])
    assert name in node.import_image(archive)
    assert name in node.images()
    # The same node, found again from its state dir (as make deploy does for make cluster's).
    attached = Node.attach(node.state_dir)
    assert attached is not None and name in attached.images()
    assert Node.attach(tmp_path) is None


def test_a_second_node_is_refused_while_one_runs(
    node_cluster: ControlPlane, tmp_path: Path
) -> None:
    second = Node(tmp_path / "second", detached=False, lock_timeout=0)
    with pytest.raises(ControlPlaneError, match="another local node runs on this machine"):
        second.prepare()
    # The refusal touched nothing of the running node.
    assert node_cluster.node is not None and node_cluster.node.running
    assert network.forward_rules()[0].endswith(network.GUARD_CHAIN)


def test_auto_starts_the_plane_alone_while_another_node_runs(
    node_cluster: ControlPlane, tmp_path: Path
) -> None:
    """``make cluster`` in a second checkout: the machine's one node is taken, so the plane
    starts alone on loopback and says why."""
    plane = ControlPlane(tmp_path / "alone", node="auto", node_lock_timeout=0)
    try:
        plane.start(timeout=120)
        assert plane.node is None
        assert plane.node_unavailable is not None
        assert "another local node runs on this machine" in plane.node_unavailable
        assert plane.server.startswith("https://127.0.0.1:")
        assert "node-lifecycle-controller" not in plane.controllers
    finally:
        plane.stop()
    assert node_cluster.node is not None and node_cluster.node.running


def test_auto_starts_the_plane_alone_on_a_host_without_a_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nodehost, "cannot_run_node", lambda: "the node needs root (test)")
    plane = ControlPlane(tmp_path / "rootless", node="auto")
    try:
        plane.start(timeout=120)
        assert plane.node is None and plane.node_unavailable == "the node needs root (test)"
    finally:
        plane.stop()
    with pytest.raises(NodeUnavailableError, match="needs root"):
        ControlPlane(tmp_path / "strict", node=True).start(timeout=120)


def test_api_server_calls_a_webhook_behind_a_service_cluster_ip(
    node_cluster: ControlPlane, kc: Any, ns: str
) -> None:
    """The API server (a host process) reaches a webhook through its Service's ClusterIP:
    kube-proxy's OUTPUT DNAT plus the Service range's local route."""
    ca = CertificateAuthority.load(node_cluster.ca_file, node_cluster.pki_dir / "ca.key")
    cert, key = ca.issue("hook", dns_names=[f"hook.{ns}.svc"], server=True)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "hook-tls", "namespace": ns},
        "type": "kubernetes.io/tls",
        "data": {
            "tls.crt": base64.b64encode(cert_pem(cert)).decode(),
            "tls.key": base64.b64encode(key_pem(key)).decode(),
        },
    }
    hook = json.loads(pod_manifest("hook", ns, ["webhook", "/tls/tls.crt", "/tls/tls.key"]))
    hook["metadata"]["labels"] = {"app": "hook"}
    hook["spec"]["restartPolicy"] = "Always"
    hook["spec"]["volumes"] = [{"name": "tls", "secret": {"secretName": "hook-tls"}}]
    hook["spec"]["containers"][0]["volumeMounts"] = [{"name": "tls", "mountPath": "/tls"}]
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "hook", "namespace": ns},
        "spec": {"selector": {"app": "hook"}, "ports": [{"port": 443, "targetPort": 8443}]},
    }
    for obj in (secret, hook, service):
        kc("apply", "-f", "-", input=json.dumps(obj))
    wait_for(
        lambda: pod(kc, ns, "hook")["status"].get("phase") == "Running",
        timeout=120,
        message="the webhook Pod Running",
    )
    config_name = f"nettest-{ns}"
    config = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": config_name},
        "webhooks": [
            {
                "name": "nettest.vectorschema.dev",
                "clientConfig": {
                    "service": {"namespace": ns, "name": "hook", "port": 443, "path": "/"},
                    "caBundle": base64.b64encode(cert_pem(ca.cert)).decode(),
                },
                "rules": [
                    {
                        "operations": ["CREATE"],
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "resources": ["configmaps"],
                    }
                ],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "failurePolicy": "Fail",
                "timeoutSeconds": 10,
            }
        ],
    }
    kc("apply", "-f", "-", input=json.dumps(config))
    try:
        attempt = iter(range(1000))

        def create() -> str:
            result = kc("create", "configmap", f"probe{next(attempt)}", "-n", ns, check=False)
            return result.stderr if result.returncode == 0 else ""

        warning = wait_for(create, timeout=90, message="a ConfigMap created through the webhook")
        assert "Warning: nettest webhook saw ConfigMap probe" in warning
    finally:
        kc("delete", "validatingwebhookconfiguration", config_name, check=False)
