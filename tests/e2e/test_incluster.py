"""The operator as users run it: the image from the Dockerfile, running as Pods of the Helm
chart on the local node (kubelet + containerd + kube-proxy), installed exactly as
`make deploy` installs it (tools/deploy.py).

One control plane with a node and one install for the whole module (the install takes a
minute or two; each test below builds on the install, in file order):

- the Deployment becomes Available; readiness and liveness probes pass (the kubelet's own
  prober counts them); the container runs as non-root, without capabilities, on a
  read-only root, and a real attempt to write anywhere but its volumes fails;
- the sample `Namespace` becomes Ready, reconciled by a Pod (in-cluster configuration, its
  ServiceAccount token): Events from `vectorschema-operator`, reported by that Pod;
- `kubectl apply` prints the plan as admission warnings through the webhook Service, with
  the chart's certificate;
- metrics are scraped through the metrics Service (its ClusterIP, from the host);
- the tenancy suite's exfiltration case, with the operator in a Pod;
- two replicas: the active Pod deleted, then the active container killed; the standby takes
  over and a change made after each reaches Ready; the takeover times go to
  bench-results.json (`failover_s`: the container kill; `failover_pod_delete_s`);
- `helm upgrade` setting `webhook.clientCA` rolls the Pods with no reconcile lost, after
  which a review without the API server's client certificate is refused (mTLS);
- `helm uninstall` leaves the collections and no stuck finalizer.

The Qdrant both replicas share is qdrantlite (tools/devenv/qdrantlite.py: Qdrant's REST API
over qdrant-client's local mode), in a Pod of the operator image behind a Service. The
tests read it from the host through that Service. Listeners for the exfiltration case
listen on the node's gateway address, which Pods reach and nothing outside does.
"""

from __future__ import annotations

import base64
import datetime
import json
import re
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.conftest import wait_for
from tests.e2e.operator_env import Listener, namespace_doc, secret_doc

from deploy import (
    NAMESPACE,
    QDRANT_NAMESPACE,
    RELEASE,
    REPO,
    Kube,
    chart_values,
    deploy_qdrant,
    helm_install,
    wait_available,
)
from devenv import CertificateAuthority, ControlPlane
from devenv.pki import cert_pem, key_pem
from vectorschema.k8s.admission import NO_OBSERVATION, UNVOUCHED_WARNING
from vectorschema.qdrant.client import ClientGateway

# The first test's setup builds the image (about 5 minutes from a cold cache) and installs.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

#: Waits for Pods and reconciles: generous, the machine is shared and busy.
POD_TIMEOUT = 300.0
READY_TIMEOUT = 180.0
SELECTOR = f"app.kubernetes.io/instance={RELEASE}"
SAMPLE_NS, SAMPLE = "tenant-acme", "catalog"
SAMPLE_COLLECTION = "tenant-acme_catalog"
SAMPLE_VECTORS = {
    "multilingual_e5_large_instruct_v1", "fashionsiglip_v1_embedding", "splade_v1_sparse",
}  # fmt: skip
VNS = "namespaces.vectorschema.dev"
VWC = "validatingwebhookconfigurations.admissionregistration.k8s.io"
CLIENT_CA_CONFIGMAP = "apiserver-webhook-client-ca"
TEXT = {"name": "text", "vectors": [{"name": "text_v1", "size": 8, "distance": "Cosine"}]}
BENCH_RESULTS = REPO / "bench-results.json"


# --------------------------------------------------------------------------------------
# The cluster with a node, the image, qdrantlite and the chart: once for the module
# --------------------------------------------------------------------------------------


@dataclass
class Installed:
    plane: ControlPlane
    kube: Kube
    image: str
    qdrant_url: str
    gateway_ip: str
    allowed_port: int
    values: dict[str, Any]
    workdir: Path

    def qdrant(self) -> ClientGateway:
        return ClientGateway.open(url=self.qdrant_url)


@pytest.fixture(scope="module")
def installed(
    node_cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Installed]:
    """The image built and imported, qdrantlite and the chart installed as `make deploy`
    does (plus an allowlisted listener address for the exfiltration case)."""
    from devenv import network
    from image import build_image

    node_plane = node_cluster
    assert node_plane.node is not None

    workdir = tmp_path_factory.mktemp("incluster")
    kube = Kube(node_plane.kubeconfig)
    built = build_image()
    node_plane.node.import_image(built.archive)
    image = str(built.name)
    qdrant_url = deploy_qdrant(kube, image, POD_TIMEOUT)
    gateway_ip = str(network.GATEWAY)
    allowed_port = free_port_on(gateway_ip)
    values = chart_values(
        image,
        qdrant_url,
        tenancy={"allowedQdrantUrls": [qdrant_url, f"http://{gateway_ip}:{allowed_port}"]},
    )
    started = time.monotonic()
    helm_install(kube, values, values_file=workdir / "values.json")
    wait_available(kube, NAMESPACE, RELEASE, POD_TIMEOUT)
    print(f"\ninstalled and Available in {time.monotonic() - started:.0f} s")
    yield Installed(node_plane, kube, image, qdrant_url, gateway_ip, allowed_port, values, workdir)
    kube.helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", check=False)
    kube.run("delete", "namespace", QDRANT_NAMESPACE, "--wait=false", check=False)


def free_port_on(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def operator_pods(kube: Kube) -> list[dict[str, Any]]:
    """The release's Pods that are not being deleted."""
    items: list[dict[str, Any]] = kube.json("get", "pods", "-n", NAMESPACE, "-l", SELECTOR)["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def pod_ready(pod: dict[str, Any]) -> bool:
    conds = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def vns(kube: Kube, ns: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = kube.json("get", VNS, name, "-n", ns)
    return obj


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    conds = obj.get("status", {}).get("conditions", [])
    return next((c for c in conds if c["type"] == type_), {})


def settled(obj: dict[str, Any]) -> bool:
    status = obj.get("status", {})
    return status.get("observedGeneration") == obj["metadata"]["generation"] and bool(
        condition(obj, "Ready")
    )


def ready_now(kube: Kube, ns: str, name: str) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        obj = vns(kube, ns, name)
        ok = settled(obj) and condition(obj, "Ready").get("status") == "True"
        return obj if ok else None

    return check


def reason_now(kube: Kube, ns: str, name: str) -> Callable[[], dict[str, Any] | None]:
    """The object once its current generation is reported (any reason)."""

    def check() -> dict[str, Any] | None:
        obj = vns(kube, ns, name)
        return obj if settled(obj) else None

    return check


def apply(kube: Kube, *docs: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return kube.run(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})
    )


def events_about(kube: Kube, ns: str, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kube.json(
        "get", "events", "-n", ns, "--field-selector", f"involvedObject.name={name}"
    )["items"]
    return items


def peering(kube: Kube) -> dict[str, Any]:
    status: dict[str, Any] = kube.json("get", "clusterkopfpeering", RELEASE).get("status") or {}
    return status


def live_peers(kube: Kube) -> dict[str, tuple[str, int]]:
    """kopf identity -> (Pod name, priority), for the peers whose keep-alive has not run out
    (a killed process stays in the peering until then)."""
    names = [p["metadata"]["name"] for p in operator_pods(kube)]
    now = time.time()
    out = {}
    for ident, peer in peering(kube).items():
        seen = datetime.datetime.fromisoformat(peer["lastseen"])
        if seen.tzinfo is None:
            seen = seen.replace(tzinfo=datetime.UTC)
        if seen.timestamp() + float(peer.get("lifetime", 60)) < now:
            continue
        for name in names:
            if f"@{name}/" in ident or ident.endswith(f"@{name}"):
                out[ident] = (name, int(peer.get("priority", 0)))
    return out


def active_pod(kube: Kube) -> tuple[str, str]:
    """(active, standby) Pod names: kopf's peering says who has the highest priority."""

    def both() -> tuple[str, str] | None:
        ready = {p["metadata"]["name"] for p in operator_pods(kube) if pod_ready(p)}
        prio = {pod: p for pod, p in live_peers(kube).values() if pod in ready}
        if len(ready) != 2 or len(prio) != 2:
            return None
        a, b = sorted(prio, key=lambda n: prio[n], reverse=True)
        return a, b

    return wait_for(both, POD_TIMEOUT, "two Ready replicas in the peering", 1.0)


def http_get(url: str, timeout: float = 10) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def kubelet_probe_counts(kube: Kube, node: str) -> str:
    """The kubelet's prober metrics (through the API server's node proxy)."""
    return kube.run("get", "--raw", f"/api/v1/nodes/{node}/proxy/metrics/probes").stdout


#: How the API server words an RBAC refusal (a 403 for another reason, such as an Event in a
#: namespace being deleted, is not one), and kopf's word for a watch it may not make.
RBAC_DENIAL = re.compile(r'forbidden: User "[^"]+" cannot [a-z]+ resource|Not enough permissions')


def assert_no_denials(kube: Kube) -> None:
    """Nothing the operator Pods did was refused by RBAC (a missing verb in the chart)."""
    for pod in operator_pods(kube):
        name = pod["metadata"]["name"]
        logs = kube.run("logs", "-n", NAMESPACE, name, "-c", "operator").stdout
        denied = RBAC_DENIAL.search(logs)
        assert denied is None, f"RBAC refused {name}: {logs[max(0, denied.start() - 300) :][:2000]}"


def record_bench(**figures: float) -> None:
    """Merge figures into bench-results.json (the file `make bench` writes)."""
    try:
        results = json.loads(BENCH_RESULTS.read_text())
    except (OSError, ValueError):
        results = {}
    results.update({k: round(v, 1) for k, v in figures.items()})
    BENCH_RESULTS.write_text(json.dumps(results, indent=2) + "\n")


def sample_ready(installed: Installed) -> dict[str, Any]:
    kube = installed.kube
    if kube.run("get", VNS, SAMPLE, "-n", SAMPLE_NS, check=False).returncode != 0:
        kube.run("apply", "-f", str(REPO / "manifests" / "samples"))
    return wait_for(ready_now(kube, SAMPLE_NS, SAMPLE), READY_TIMEOUT, "the sample Ready", 1.0)


# --------------------------------------------------------------------------------------
# The Deployment, its probes and its security context
# --------------------------------------------------------------------------------------

#: Reports, from inside the container, who it runs as and what it can write.
INSIDE = r"""
import errno, json, os
out = {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups()}
status = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
out["capeff"] = status["CapEff"].strip()
out["nonewprivs"] = status["NoNewPrivs"].strip()
writes = {}
for d in ["/", "/opt/vectorschema", "/opt/vectorschema/lib", "/etc", "/usr", "/var", "/home",
          "/var/tmp", "/tmp"]:
    p = os.path.join(d, ".vectorschema-write-probe")
    try:
        with open(p, "w") as f:
            f.write("x")
        os.remove(p)
        writes[d] = "ok"
    except OSError as e:
        writes[d] = errno.errorcode.get(e.errno, str(e.errno))
out["writes"] = writes
rw = []
for line in open("/proc/self/mountinfo"):
    left, right = line.split(" - ")
    fields, rfields = left.split(), right.split()
    if "rw" in fields[5].split(","):
        rw.append([fields[4], rfields[0]])
out["rw_mounts"] = rw
print(json.dumps(out))
"""

#: Writable mounts that reach no disk: kernel pseudo filesystems and memory (the runtime's
#: /dev, /dev/shm, masked /proc entries, the cgroup tmpfs).
IN_MEMORY = {"proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2"}
#: The kubelet's per-Pod files, which it bind-mounts writable into every container.
KUBELET_FILES = {"/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/dev/termination-log"}


def test_available_probed_and_hardened(installed: Installed) -> None:
    kube = installed.kube
    dep = kube.json("get", "deployment", RELEASE, "-n", NAMESPACE)
    conds = {c["type"]: c["status"] for c in dep["status"]["conditions"]}
    assert conds["Available"] == "True" and dep["status"]["readyReplicas"] == 2

    pods = operator_pods(kube)
    assert len(pods) == 2 and all(pod_ready(p) for p in pods)
    node = pods[0]["spec"]["nodeName"]
    names = [p["metadata"]["name"] for p in pods]

    # The kubelet's prober: readiness and liveness each passed for both Pods (the liveness
    # probe starts after its initialDelaySeconds).
    def probed() -> str | None:
        text = kubelet_probe_counts(kube, node)
        for name in names:
            for probe in ("Readiness", "Liveness"):
                line = next(
                    (
                        ln
                        for ln in text.splitlines()
                        if ln.startswith("prober_probe_total{")
                        and f'pod="{name}"' in ln
                        and f'probe_type="{probe}"' in ln
                        and 'result="successful"' in ln
                    ),
                    None,
                )
                if line is None or float(line.rsplit(" ", 1)[1]) < 1:
                    return None
        return text

    text = wait_for(probed, 120, "successful readiness and liveness probes of both Pods", 2.0)
    # Readiness fails while the operator starts (that is what it is for); liveness never.
    failed = [
        ln for ln in text.splitlines()
        if 'container="operator"' in ln and 'result="failed"' in ln
        and 'probe_type="Liveness"' in ln
        and any(f'pod="{n}"' in ln for n in names) and float(ln.rsplit(" ", 1)[1]) > 0
    ]  # fmt: skip
    assert not failed, failed
    for pod in operator_pods(kube):
        (cs,) = pod["status"]["containerStatuses"]
        assert cs["restartCount"] == 0, cs

    # The security context as the chart sets it ...
    spec = pods[0]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    (container,) = spec["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    # ... and as the running process sees it.
    out = kube.run(
        "exec", "-n", NAMESPACE, names[0], "-c", "operator", "--", "python", "-c", INSIDE
    ).stdout
    inside = json.loads(out)
    print(f"\ninside {names[0]}: {json.dumps(inside, indent=1)}")
    assert inside["uid"] == 10001 and inside["gid"] == 10001
    assert int(inside["capeff"], 16) == 0 and inside["nonewprivs"] == "1"
    assert inside["writes"].pop("/tmp") == "ok"  # the emptyDir volume
    assert set(inside["writes"].values()) == {"EROFS"}, inside["writes"]
    # Of the writable mounts, the ones on a disk: the /tmp volume and the kubelet's files.
    on_disk = {where for where, fstype in inside["rw_mounts"] if fstype not in IN_MEMORY}
    assert "/" not in on_disk and "/tmp" in on_disk
    unexpected = on_disk - KUBELET_FILES - {"/tmp"}
    assert not unexpected, f"writable mounts beyond the volumes: {unexpected}"


# --------------------------------------------------------------------------------------
# A sample reconciled by the Pod
# --------------------------------------------------------------------------------------


def test_the_sample_is_reconciled_by_a_pod(installed: Installed) -> None:
    kube = installed.kube
    obj = sample_ready(installed)
    assert set(obj["status"]["vectors"]) >= SAMPLE_VECTORS, obj["status"]
    names = {p["metadata"]["name"] for p in operator_pods(kube)}

    posted = wait_for(
        lambda: events_about(kube, SAMPLE_NS, SAMPLE), 60, "Events about the sample", 1.0
    )
    assert {e["source"]["component"] for e in posted} == {"vectorschema-operator"}
    assert {e["reportingComponent"] for e in posted} == {"vectorschema-operator"}
    # Posted by a Pod of the release (kopf names itself after the Pod's hostname): no other
    # operator runs on this cluster, and the Pod has nothing but its ServiceAccount token.
    reporters = {e.get("reportingInstance") for e in posted}
    assert reporters and reporters <= names, (reporters, names)

    gateway = installed.qdrant()
    try:
        live = gateway.observe(SAMPLE_COLLECTION)
    finally:
        gateway.close()
    assert live is not None and sorted(live.names) == sorted(obj["status"]["vectors"])
    assert live.metadata.get("vectorschema.dev/owner") == f"{SAMPLE_NS}/{SAMPLE}"


# --------------------------------------------------------------------------------------
# The webhook behind its Service
# --------------------------------------------------------------------------------------


def webhook_warnings(result: subprocess.CompletedProcess[str]) -> list[str]:
    prefix = "Warning: vectorschema: "
    return [ln[len("Warning: ") :] for ln in result.stderr.splitlines() if ln.startswith(prefix)]


def plan_warning(result: subprocess.CompletedProcess[str]) -> str:
    """The webhook's plan line among kubectl's warnings (notes may follow it)."""
    (line,) = [w for w in webhook_warnings(result) if w.startswith("vectorschema: plan ")]
    return line


def edit_sample(
    installed: Installed, extra_vector: str, *dry_run: str
) -> subprocess.CompletedProcess[str]:
    """Add an inline plugin with one dense vector to the sample (a non-destructive plan);
    `dry_run` ("--dry-run=server") only asks."""
    obj = vns(installed.kube, SAMPLE_NS, SAMPLE)
    spec = obj["spec"]
    spec["plugins"] = [p for p in spec["plugins"] if p["name"] != extra_vector] + [
        {"name": extra_vector, "vectors": [{"name": extra_vector, "size": 4, "distance": "Dot"}]}
    ]
    doc = {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "metadata": {"name": SAMPLE, "namespace": SAMPLE_NS},
        "spec": spec,
    }
    return installed.kube.run("apply", *dry_run, "-f", "-", input=json.dumps(doc))


def test_kubectl_apply_prints_the_plan_through_the_webhook_service(installed: Installed) -> None:
    kube = installed.kube
    sample_ready(installed)
    (hook,) = kube.json("get", VWC, RELEASE)["webhooks"]
    assert "url" not in hook["clientConfig"]
    assert hook["clientConfig"]["service"] == {
        "name": f"{RELEASE}-webhook", "namespace": NAMESPACE, "path": "/plan", "port": 443,
    }  # fmt: skip
    secret = kube.json("get", "secret", f"{RELEASE}-webhook-cert", "-n", NAMESPACE)
    assert hook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]

    # Without webhook.clientCA (the chart's default), a replica plans only an object it has
    # observed itself, and only the active replica reconciles: the Service sends each review
    # to either replica, so the standby's answers say the plan is not known. Server-side dry
    # runs until the active one answered (the answers of the standby are checked too).
    others: list[str] = []

    def planned() -> str | None:
        result = edit_sample(installed, "hooked", "--dry-run=server")
        lines = webhook_warnings(result)
        plan = [w for w in lines if w.startswith("vectorschema: plan ")]
        if not plan:
            others.extend(lines)
        return plan[0] if plan else None

    try:
        warning = wait_for(planned, 20, "a plan from the active replica", 0.2)
    except AssertionError:
        # The API server keeps its connection to the webhook alive, so every review may go
        # to the one replica it first reached. Pinned to the standby (its answers are
        # checked below), remove the standby Pod: until its replacement is Ready, the
        # Service's only endpoint is the active replica.
        _, standby = active_pod(kube)
        kube.run("delete", "pod", standby, "-n", NAMESPACE, "--wait=false")
        try:
            warning = wait_for(planned, 60, "a plan from the active replica", 0.2)
        except AssertionError as exc:
            seen = sorted(set(others))
            raise AssertionError(f"{exc}; the answers without a plan: {seen}") from None
        wait_available(kube, NAMESPACE, RELEASE, POD_TIMEOUT)
    assert warning.endswith(" adds vector hooked in place; no point is lost"), warning
    # The standby's watches are paused by peering, so its indexes are empty: it cannot
    # vouch for the request, or has observed nothing; either way it says there is no plan.
    assert all(NO_OBSERVATION in w or UNVOUCHED_WARNING in w for w in others), others
    print(f"\n{len(others)} answer(s) without a plan before it (the standby): {others[:1]}")
    result = edit_sample(installed, "hooked")
    print(f"\n$ kubectl apply -f catalog.yaml\n{result.stderr}{result.stdout}")
    assert webhook_warnings(result), result.stderr
    obj = wait_for(ready_now(kube, SAMPLE_NS, SAMPLE), READY_TIMEOUT, "the edit Ready", 1.0)
    assert "hooked" in obj["status"]["vectors"]


# --------------------------------------------------------------------------------------
# Metrics through the metrics Service
# --------------------------------------------------------------------------------------


def test_metrics_through_the_metrics_service(installed: Installed) -> None:
    kube = installed.kube
    sample_ready(installed)
    svc = kube.json("get", "service", f"{RELEASE}-metrics", "-n", NAMESPACE)
    url = f"http://{svc['spec']['clusterIP']}:{svc['spec']['ports'][0]['port']}"
    assert http_get(f"{url}/readyz")[0] == 200

    # The Service picks a replica per connection: scrape until the active one answered.
    def active_scrape() -> str | None:
        status, text = http_get(f"{url}/metrics")
        assert status == 200 and "process_cpu_seconds_total" in text
        # The gauge follows the Ready status the replica has seen come back from the API
        # server, a moment after its reconcile counted: wait for both.
        ok = (
            'vectorschema_reconcile_total{result="ready"}' in text
            and 'vectorschema_namespaces{ready="True",reason="Reconciled"}' in text
        )
        return text if ok else None

    text = wait_for(active_scrape, 60, "a scrape of the active replica", 0.2)
    assert_no_denials(kube)
    assert (
        f'server="{installed.qdrant_url}"' in text or "vectorschema_qdrant_requests_total" in text
    )


# --------------------------------------------------------------------------------------
# Tenancy: the exfiltration case with the operator in a Pod
# --------------------------------------------------------------------------------------


def webhook_refuses(kube: Kube, doc: dict[str, Any]) -> bool:
    """A server-side dry run of `doc` is refused by the admission webhook."""
    done = kube.run("apply", "--dry-run=server", "-f", "-", input=json.dumps(doc), check=False)
    return done.returncode != 0 and "plan.vectorschema.dev" in done.stderr


def test_a_secret_never_reaches_a_url_the_admin_did_not_allow(installed: Installed) -> None:
    """tests/e2e/test_tenancy.py's exfiltration case, with the operator in a Pod: first the
    webhook refuses the URL at apply time; then, with the webhook gone (its failurePolicy is
    Ignore: an outage lets the object in), the operator refuses it without a packet sent."""
    kube = installed.kube
    attacker = f"attacker-{uuid.uuid4().hex[:6]}"
    kube.run("create", "namespace", attacker)
    token = f"sa-token-{uuid.uuid4().hex}"
    apply(kube, secret_doc(attacker, "app-token", {"token": token.encode()}, labelled=False))
    ref = {"name": "app-token", "key": "token"}
    host = installed.gateway_ip
    outside_port = free_port_on(host)
    hook = kube.json("get", VWC, RELEASE)
    try:
        with (
            Listener(outside_port, host=host) as outside,
            Listener(installed.allowed_port, host=host) as allowed,
        ):
            # The control: the operator's Pod reaches a listener on this address.
            reach = namespace_doc(attacker, "reach", plugins=[TEXT], qdrant={"url": allowed.url})
            apply(kube, reach)
            wait_for(lambda: allowed.received, 120, "the operator Pod to reach the listener", 0.5)

            exfil = namespace_doc(
                attacker,
                "exfil",
                plugins=[TEXT],
                qdrant={"url": outside.url, "apiKeySecretRef": ref},
            )
            # Layer 1: the webhook refuses it at apply time.
            refused = kube.run("apply", "-f", "-", input=json.dumps(exfil), check=False)
            assert refused.returncode != 0 and "not on the operator's allowlist" in refused.stderr
            print(f"\n$ kubectl apply -f exfil.yaml\n{refused.stderr}")

            # Layer 2: without the webhook, the operator refuses it before any connection.
            kube.run("delete", VWC, RELEASE)
            wait_for(lambda: not webhook_refuses(kube, exfil), 60, "the webhook to be gone", 1.0)
            apply(kube, exfil)
            obj = wait_for(reason_now(kube, attacker, "exfil"), READY_TIMEOUT, "exfil", 1.0)
            assert condition(obj, "Ready")["reason"] == "QdrantUrlNotAllowed", obj["status"]

            # An allowed URL with a Secret lacking the label: not read, not sent.
            apply(
                kube,
                namespace_doc(attacker, "exfil", plugins=[TEXT],
                              qdrant={"url": allowed.url, "apiKeySecretRef": ref}),
            )  # fmt: skip
            wait_for(
                lambda: (
                    o
                    if settled(o := vns(kube, attacker, "exfil"))
                    and condition(o, "Ready")["reason"] == "SecretNotAllowed"
                    else None
                ),
                READY_TIMEOUT, "exfil SecretNotAllowed", 1.0,
            )  # fmt: skip
            # Without a Secret, the URL alone reaches nothing outside the allowlist either.
            apply(
                kube,
                namespace_doc(attacker, "ssrf", plugins=[TEXT],
                              qdrant={"url": outside.url + "/admin"}),
            )  # fmt: skip
            obj = wait_for(reason_now(kube, attacker, "ssrf"), READY_TIMEOUT, "ssrf", 1.0)
            assert condition(obj, "Ready")["reason"] == "QdrantUrlNotAllowed", obj["status"]

            assert outside.received == [], [r.text() for r in outside.received]
            assert token not in allowed.everything()
            assert all(k.lower() != "api-key" for r in allowed.received for k, _ in r.headers)
    finally:
        for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
            hook["metadata"].pop(key, None)
        if kube.run("get", VWC, RELEASE, check=False).returncode != 0:
            kube.run("create", "-f", "-", input=json.dumps(hook))
        kube.run("delete", VNS, "--all", "-n", attacker, "--wait=false", check=False)
        kube.run("delete", "namespace", attacker, "--wait=false", check=False)


# --------------------------------------------------------------------------------------
# Two replicas: failover
# --------------------------------------------------------------------------------------


def change_then_ready(installed: Installed, name: str, started: float) -> tuple[float, set[str]]:
    """Create Namespace `name` (right after a kill), wait for it Ready: the seconds since
    `started`, and which Pods reported on it."""
    kube = installed.kube
    apply(kube, namespace_doc(SAMPLE_NS, name, plugins=[TEXT]))
    wait_for(ready_now(kube, SAMPLE_NS, name), READY_TIMEOUT, f"{name} Ready after failover", 0.2)
    took = time.monotonic() - started
    posted = events_about(kube, SAMPLE_NS, name)
    return took, {e.get("reportingInstance") for e in posted}


def test_failover_when_the_active_pod_is_deleted(installed: Installed) -> None:
    kube = installed.kube
    sample_ready(installed)
    active, _ = active_pod(kube)
    started = time.monotonic()
    kube.run("delete", "pod", active, "-n", NAMESPACE, "--wait=false")
    took, reporters = change_then_ready(installed, f"after-delete-{uuid.uuid4().hex[:4]}", started)
    print(f"\npod {active} deleted: a new Namespace was Ready {took:.1f} s later ({reporters})")
    assert active not in reporters
    record_bench(failover_pod_delete_s=took)
    wait_available(kube, NAMESPACE, RELEASE, POD_TIMEOUT)


def test_failover_when_the_active_container_is_killed(installed: Installed) -> None:
    """A crash: SIGKILL from the runtime, no goodbye to the peering. The kubelet restarts
    the container at once, as a new kopf peer with a new random priority; the dead peer's
    record blocks lower priorities until its keep-alive lifetime (60 s) runs out. So the
    change made after the kill is served by the highest-priority live replica: the standby,
    or the restarted container if it drew the higher priority."""
    kube = installed.kube
    sample_ready(installed)
    active, standby = active_pod(kube)
    killed = {i for i, (pod, _) in live_peers(kube).items() if pod == active}
    pod = kube.json("get", "pod", active, "-n", NAMESPACE)
    (cs,) = pod["status"]["containerStatuses"]
    container_id = cs["containerID"].split("://", 1)[1]
    node = installed.plane.node
    assert node is not None
    started = time.monotonic()
    node.ctr("task", "kill", "--signal", "SIGKILL", container_id)
    took, reporters = change_then_ready(installed, f"after-kill-{uuid.uuid4().hex[:4]}", started)
    restarted = kube.json("get", "pod", active, "-n", NAMESPACE)["status"]["containerStatuses"][0]
    assert restarted["restartCount"] >= 1, restarted

    peers = live_peers(kube)
    standby_prio = max(p for pod, p in peers.values() if pod == standby)
    reborn = [p for i, (pod, p) in peers.items() if pod == active and i not in killed]
    winner = active if reborn and max(reborn) > standby_prio else standby
    print(
        f"\ncontainer of {active} killed: a new Namespace was Ready {took:.1f} s later, "
        f"served by {'the restarted container' if winner == active else 'the standby'} "
        f"(priorities: standby {standby_prio}, restarted {reborn})"
    )
    assert winner in reporters, (winner, reporters)
    record_bench(failover_s=took)
    wait_available(kube, NAMESPACE, RELEASE, POD_TIMEOUT)


# --------------------------------------------------------------------------------------
# helm upgrade: a rolling update with no reconcile lost; then mTLS
# --------------------------------------------------------------------------------------


def client_cert(ca: CertificateAuthority, where: Path, name: str) -> tuple[Path, Path]:
    cert, key = ca.issue(name)
    where.mkdir(parents=True, exist_ok=True)
    (where / "tls.crt").write_bytes(cert_pem(cert))
    (where / "tls.key").write_bytes(key_pem(key))
    return where / "tls.crt", where / "tls.key"


def webhook_handshake(installed: Installed, client: tuple[Path, Path] | None) -> None:
    """A TLS 1.2 handshake with the webhook Service's ClusterIP, trusting the chart's CA
    and naming the Service as the API server does."""
    kube = installed.kube
    (hook,) = kube.json("get", VWC, RELEASE)["webhooks"]
    ctx = ssl.create_default_context(
        cadata=base64.b64decode(hook["clientConfig"]["caBundle"]).decode("ascii")
    )
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    if client is not None:
        ctx.load_cert_chain(*client)
    ip = kube.json("get", "service", f"{RELEASE}-webhook", "-n", NAMESPACE)["spec"]["clusterIP"]
    with (
        socket.create_connection((ip, 443), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=f"{RELEASE}-webhook.{NAMESPACE}.svc") as tls,
    ):
        assert tls.version() == "TLSv1.2"


def test_helm_upgrade_rolls_the_pods_with_no_reconcile_lost_then_mtls(
    installed: Installed,
) -> None:
    kube = installed.kube
    sample_ready(installed)
    before = {p["metadata"]["name"] for p in operator_pods(kube)}
    kube.run(
        "create", "configmap", CLIENT_CA_CONFIGMAP, "-n", NAMESPACE,
        f"--from-file=ca.crt={installed.plane.webhook_client_ca_file}",
    )  # fmt: skip
    values = {
        **installed.values,
        "webhook": {"clientCA": {"configMap": CLIENT_CA_CONFIGMAP, "key": "ca.crt"}},
    }
    helm_install(kube, values, values_file=installed.workdir / "values-mtls.json")

    # Changes made while the Pods roll: each is reconciled, none lost.
    made: list[str] = []
    deadline = time.monotonic() + POD_TIMEOUT
    while time.monotonic() < deadline:
        name = f"during-roll-{len(made)}"
        apply(kube, namespace_doc(SAMPLE_NS, name, plugins=[TEXT]))
        made.append(name)
        pods = operator_pods(kube)
        rolled = {p["metadata"]["name"] for p in pods}.isdisjoint(before)
        if rolled and len(pods) == 2 and all(pod_ready(p) for p in pods):
            break
        time.sleep(3)
    wait_available(kube, NAMESPACE, RELEASE, POD_TIMEOUT)
    assert {p["metadata"]["name"] for p in operator_pods(kube)}.isdisjoint(before)
    for name in made:
        wait_for(ready_now(kube, SAMPLE_NS, name), READY_TIMEOUT, f"{name} Ready", 1.0)
    print(f"\n{len(made)} Namespaces created during the roll: all Ready")
    edited = edit_sample(installed, "after_roll")
    wait_for(ready_now(kube, SAMPLE_NS, SAMPLE), READY_TIMEOUT, "the sample edit Ready", 1.0)

    # mTLS: the API server's client certificate completes the handshake; none, or another
    # CA's, does not.
    with pytest.raises((ssl.SSLError, ConnectionError)):
        webhook_handshake(installed, None)
    ca = installed.plane.webhook_client_ca()
    webhook_handshake(installed, client_cert(ca, installed.workdir / "apiserver", "a"))
    other = CertificateAuthority.create("not-the-api-servers")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        webhook_handshake(installed, client_cert(other, installed.workdir / "other", "b"))
    # ... and the API server, which presents its certificate, still gets the plan.
    warning = plan_warning(edited)
    assert warning.endswith(" adds vector after_roll in place; no point is lost"), warning


# --------------------------------------------------------------------------------------
# helm uninstall
# --------------------------------------------------------------------------------------


def test_helm_uninstall_leaves_the_collections_and_no_stuck_finalizer(
    installed: Installed,
) -> None:
    kube = installed.kube
    sample_ready(installed)
    served = [o["metadata"]["name"] for o in kube.json("get", VNS, "-n", SAMPLE_NS)["items"]]
    assert_no_denials(kube)
    kube.helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout", "180s")
    wait_for(lambda: not operator_pods(kube) and not kube.json(
        "get", "pods", "-n", NAMESPACE, "-l", SELECTOR)["items"], POD_TIMEOUT,
        "the operator Pods gone", 1.0)  # fmt: skip
    # Nothing of the release is left holding a finalizer; its namespace deletes.
    leftovers = kube.json("get", "all,configmaps,secrets,serviceaccounts", "-n", NAMESPACE)
    stuck = [o["metadata"]["name"] for o in leftovers["items"] if o["metadata"].get("finalizers")]
    assert not stuck, stuck
    assert kube.run("get", "clusterkopfpeering", RELEASE, check=False).returncode != 0
    kube.run("delete", "namespace", NAMESPACE, "--timeout=180s")
    # Tenants keep their resources (not deleting) and Qdrant keeps every collection.
    for name in served:
        obj = vns(kube, SAMPLE_NS, name)
        assert obj["metadata"].get("deletionTimestamp") is None
    gateway = installed.qdrant()
    try:
        assert gateway.observe(SAMPLE_COLLECTION) is not None
        for name in served:
            assert gateway.observe(f"{SAMPLE_NS}_{name}") is not None, name
    finally:
        gateway.close()
    for crd in ("namespaces.vectorschema.dev", "plugins.vectorschema.dev"):
        kube.run("get", "crd", crd)
