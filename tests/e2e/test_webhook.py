"""The admission webhook on a real API server: the plan printed by `kubectl apply`.

A control plane private to this module (its webhook configuration must not reach the other
modules' objects) and the operator as a separate process, run as `make run` runs it:
`VECTORSCHEMA_WEBHOOK_PORT` set, so it serves the webhook on loopback with a certificate
it makes itself and registers the ValidatingWebhookConfiguration. The API server calls it
on 127.0.0.1.

One tenant, `tenant-acme/catalog`, goes through the GitOps flow in order: its collection
exists before the operator (2,000 points carry vector `text`), so adoption is refused
until `spec.adopt`; a plugin is added (non-destructive warning); a server-side dry run
and `kubectl diff` show the destructive plan and its fingerprint and change nothing; the
same fingerprint pinned in `spec.confirmPlan` is applied. Other tests refuse a conflicting
plugin and an unlisted one, warn of a missing one, and finally stop the operator: applies
still work (failurePolicy Ignore).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from qdrant_client import models as qm
from tests.e2e.conftest import START_TIMEOUT
from tests.e2e.operator_env import run_kubectl
from tests.seams import client_of, forget

from devenv import ControlPlane, free_port
from devenv.pki import CertificateAuthority, cert_pem, key_pem
from vectorschema.api import VectorSpec
from vectorschema.core.schema import CollectionSettings, vector_def_from_spec
from vectorschema.qdrant.pool import connect

REPO = Path(__file__).resolve().parents[2]
KOPF = Path(sys.executable).parent / "kopf"
KUBE_NS, NAME = "tenant-acme", "catalog"
COLLECTION = f"{KUBE_NS}_{NAME}"
POINTS = 2000
CONFIGURATION = "vectorschema.dev"
TEXT = {"name": "text", "type": "dense", "size": 4, "distance": "Cosine"}
IMAGE = {"name": "image", "type": "dense", "size": 3, "distance": "Dot"}
IMAGE_BIG = {"name": "image", "type": "dense", "size": 8, "distance": "Dot"}


def plugin(name: str, *vectors: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "vectorschema.dev/v1alpha1",
        "kind": "Plugin",
        "metadata": {"name": name},
        "spec": {"vectors": list(vectors)},
    }


def namespace(name: str = NAME, **spec: Any) -> dict[str, Any]:
    plugins = [{"name": p} for p in spec.pop("plugins", [])]
    return {
        "apiVersion": "vectorschema.dev/v1alpha1",
        "kind": "Namespace",
        "metadata": {"name": name, "namespace": KUBE_NS},
        "spec": {"plugins": plugins, **spec},
    }


class Cluster:
    """kubectl on the private control plane; `apply` returns kubectl's result unchecked."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    def run(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run_kubectl(self.plane.kubeconfig, *args, input=input, check=check)

    def apply(self, doc: dict[str, Any], *flags: str) -> subprocess.CompletedProcess[str]:
        return self.run("apply", *flags, "-f", "-", input=yaml.safe_dump(doc), check=False)

    def ready(self) -> dict[str, Any] | None:
        """The tenant once Ready for its current generation."""
        obj = self.vns()
        return obj if is_current_ready(obj) else None

    def vns(self, name: str = NAME) -> dict[str, Any]:
        out = self.run("get", "vns", name, "-n", KUBE_NS, "-o", "json").stdout
        result: dict[str, Any] = json.loads(out)
        return result


def warnings_of(result: subprocess.CompletedProcess[str]) -> list[str]:
    """kubectl's `Warning: ...` lines from the webhook (on stderr)."""
    prefix = "Warning: vectorschema: "
    return [ln[len("Warning: ") :] for ln in result.stderr.splitlines() if ln.startswith(prefix)]


def ready(obj: dict[str, Any]) -> dict[str, Any]:
    conds = obj.get("status", {}).get("conditions", [])
    return next((c for c in conds if c["type"] == "Ready"), {})


def is_current_ready(obj: dict[str, Any]) -> bool:
    status = obj.get("status", {})
    return (
        ready(obj).get("status") == "True"
        and status.get("observedGeneration") == obj["metadata"]["generation"]
    )


# --- fixtures: a private control plane, a store with 2,000 points, the operator ----------------


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A control plane of this module's own (binaries from the cache; the session's
    control plane is not needed, so running this file alone starts one, not two)."""
    own = ControlPlane(tmp_path_factory.mktemp("webhook-plane"))
    own.start(timeout=START_TIMEOUT)
    try:
        run_kubectl(own.kubeconfig, "apply", "-f", str(REPO / "crds"))
        run_kubectl(
            own.kubeconfig,
            "wait",
            "--for=condition=Established",
            "crd/namespaces.vectorschema.dev",
            "crd/plugins.vectorschema.dev",
            "--timeout=60s",
        )
        run_kubectl(own.kubeconfig, "create", "namespace", KUBE_NS)
        yield own
    finally:
        own.stop()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded store, with tenant-acme's collection made before the operator ran:
    vector `text`, 2,000 points carrying it, nobody's owner stamp."""
    path = tmp_path_factory.mktemp("webhook-qdrant") / "store"
    gateway = connect(path=str(path))
    gateway.create_collection(
        COLLECTION,
        [vector_def_from_spec(VectorSpec.model_validate(TEXT))],
        CollectionSettings(),
        {},
    )
    with client_of(gateway) as client:
        client.upsert(
            COLLECTION,
            [qm.PointStruct(id=i, vector={"text": [1.0, 0.0, 0.0, 0.0]}) for i in range(POINTS)],
        )
    forget(path=str(path))
    return path


class Operator:
    def __init__(self, plane: ControlPlane, store: Path, log: Path) -> None:
        self.port = free_port()
        env = dict(
            os.environ,
            KUBECONFIG=str(plane.kubeconfig),
            QDRANT_PATH=str(store),
            VECTORSCHEMA_RESYNC_SECONDS="2",
            VECTORSCHEMA_WEBHOOK_PORT=str(self.port),
            # As `make run` does: only the API server's client certificate is answered.
            VECTORSCHEMA_WEBHOOK_CLIENT_CA=str(plane.webhook_client_ca_file),
        )
        self.log = log
        self.proc = subprocess.Popen(
            [
                str(KOPF),
                "run",
                "-m",
                "vectorschema.k8s.handlers",
                "--all-namespaces",
                "--standalone",
            ],
            env=env,
            stdout=log.open("a"),
            stderr=subprocess.STDOUT,
            text=True,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def operator(
    plane: ControlPlane,
    store: Path,
    tmp_path_factory: pytest.TempPathFactory,
    wait_for: Any,
) -> Iterator[Operator]:
    op = Operator(plane, store, tmp_path_factory.mktemp("webhook-operator") / "operator.log")
    k8s = Cluster(plane)
    try:
        k8s.apply(plugin("text", TEXT))
        k8s.apply(plugin("image", IMAGE))
        k8s.apply(plugin("image-big", IMAGE_BIG))
        probe = namespace("probe", plugins=["text"])

        def serving() -> bool:  # registered, answering, and the Plugins are indexed
            assert op.proc.poll() is None, op.log.read_text()[-3000:]
            said = warnings_of(k8s.apply(probe, "--dry-run=server"))
            return any("creates collection tenant-acme_probe" in w for w in said)

        wait_for(serving, 60, "the webhook to answer", 0.5)
        yield op
    finally:
        op.stop()


# --- the GitOps flow, in order, on tenant-acme/catalog ----------------------------------------


def test_adopting_an_existing_collection_is_refused_until_spec_adopt(
    plane: ControlPlane, operator: Operator, wait_for: Any
) -> None:
    k8s = Cluster(plane)
    refused = k8s.apply(namespace(plugins=["text"]))
    assert refused.returncode == 1
    assert 'admission webhook "plan.vectorschema.dev" denied the request' in refused.stderr
    assert f"spec.adopt: Qdrant collection '{COLLECTION}' exists and no resource owns it" in (
        refused.stderr
    )
    assert k8s.run("get", "vns", NAME, "-n", KUBE_NS, check=False).returncode == 1
    print(f"\n$ kubectl apply -f catalog.yaml\n{refused.stderr}")

    adopted = k8s.apply(namespace(plugins=["text"], adopt=True))
    assert adopted.returncode == 0, adopted.stderr
    assert warnings_of(adopted) == []  # the collection already matches: nothing to say
    obj = wait_for(k8s.ready, 60, "Ready", 0.3)
    assert obj["status"]["pointsCount"] == POINTS


def test_apply_prints_a_non_destructive_plan(
    plane: ControlPlane, operator: Operator, wait_for: Any
) -> None:
    k8s = Cluster(plane)
    result = k8s.apply(namespace(plugins=["text", "image"], adopt=True))
    assert result.returncode == 0, result.stderr
    (warning,) = warnings_of(result)
    assert warning.startswith("vectorschema: plan ")
    assert warning.endswith(" adds vector image in place; no point is lost")
    print(f"\n$ kubectl apply -f catalog.yaml\n{result.stderr}{result.stdout}")
    obj = wait_for(k8s.ready, 60, "Ready", 0.3)
    assert obj["status"]["vectors"] == ["text", "image"]


def test_a_server_dry_run_prints_the_destructive_plan_and_changes_nothing(
    plane: ControlPlane, operator: Operator, wait_for: Any
) -> None:
    k8s = Cluster(plane)
    before = k8s.vns()
    change = namespace(plugins=["image"], adopt=True)

    dry = k8s.apply(change, "--dry-run=server")
    assert dry.returncode == 0, dry.stderr
    (warning,) = warnings_of(dry)
    fp = warning.split()[2]
    assert warning == (
        f"vectorschema: plan {fp} is destructive: removes vector text (2,000 points carry it); "
        f"it will wait for approval: set spec.confirmPlan: {fp}"
    )
    print(f"\n$ kubectl apply --dry-run=server -f catalog.yaml\n{dry.stderr}{dry.stdout}")

    diff = k8s.run("diff", "-f", "-", input=yaml.safe_dump(change), check=False)
    assert diff.returncode == 1, diff.stderr  # 1: differences found
    assert f"Warning: vectorschema: plan {fp} is destructive" in diff.stderr
    assert "-  - name: text" in diff.stdout
    print(f"\n$ kubectl diff -f catalog.yaml\n{diff.stderr}{diff.stdout}")

    # Nothing stored, so nothing reconciled: the same object (a status write would have
    # changed its resourceVersion), no Event. The next test's report shows the collection
    # still held vector text and its 2,000 points after this.
    after = k8s.vns()
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["status"] == before["status"]
    events = json.loads(
        k8s.run(
            "get",
            "events",
            "-n",
            KUBE_NS,
            "-o",
            "json",
            "--field-selector",
            f"involvedObject.name={NAME}",
        ).stdout
    )["items"]
    assert not any(e["reason"] == "PlanPending" for e in events)
    FINGERPRINT["dry-run"] = fp


#: The fingerprint the dry run showed, pinned by the next test as a reviewer would.
FINGERPRINT: dict[str, str] = {}


def test_the_fingerprint_pinned_in_the_same_change_is_applied(
    plane: ControlPlane, operator: Operator, wait_for: Any
) -> None:
    k8s = Cluster(plane)
    fp = FINGERPRINT["dry-run"]
    result = k8s.apply(namespace(plugins=["image"], adopt=True, confirmPlan=fp))
    assert result.returncode == 0, result.stderr
    assert warnings_of(result) == [
        f"vectorschema: plan {fp} is destructive: removes vector text (2,000 points carry it); "
        "spec.confirmPlan approves it: the operator will apply it"
    ]
    print(f"\n$ kubectl apply -f catalog.yaml\n{result.stderr}{result.stdout}")
    obj = wait_for(k8s.ready, 60, "Ready", 0.3)
    report = obj["status"]["lastReconfigure"]
    assert report["planFingerprint"] == fp
    assert report["vectorsRemoved"] == ["text"]
    assert report["previousPointsCount"] == POINTS  # the dry run had changed nothing
    assert obj["status"]["vectors"] == ["image"]


# --- a forged AdmissionReview, posted straight to the webhook -----------------------------------


def forged_review(new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """What any pod could post: an UPDATE of the victim's object, adopt: true."""
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "00000000-0000-0000-0000-00000000f0f0",
            "kind": {"group": "vectorschema.dev", "version": "v1alpha1", "kind": "Namespace"},
            "resource": {
                "group": "vectorschema.dev",
                "version": "v1alpha1",
                "resource": "namespaces",
            },
            "name": NAME,
            "namespace": KUBE_NS,
            "operation": "UPDATE",
            "userInfo": {"username": "system:serviceaccount:tenant-other:default"},
            "object": new,
            "oldObject": old,
            "dryRun": True,
        },
    }


def webhook_context(k8s: Cluster, client: tuple[Path, Path] | None) -> ssl.SSLContext:
    """Trusting the webhook's serving CA (as the API server does), with the given client
    certificate or none."""
    hook = json.loads(
        k8s.run("get", "validatingwebhookconfiguration", CONFIGURATION, "-o", "json").stdout
    )["webhooks"][0]
    ctx = ssl.create_default_context(
        cadata=base64.b64decode(hook["clientConfig"]["caBundle"]).decode("ascii")
    )
    if client is not None:
        ctx.load_cert_chain(*client)
    return ctx


def tls12_handshake(k8s: Cluster, port: int, client: tuple[Path, Path] | None) -> None:
    """A bare TLS 1.2 handshake with the webhook (in 1.2 the server's verdict on the
    client certificate ends the handshake itself, before any HTTP byte)."""
    ctx = webhook_context(k8s, client)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() == "TLSv1.2"


def post_to_webhook(
    k8s: Cluster, port: int, review: dict[str, Any], client: tuple[Path, Path] | None
) -> dict[str, Any]:
    """POST the review to the webhook's own port, as `webhook_context` connects."""
    ctx = webhook_context(k8s, client)
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        conn.request(
            "POST", "/plan", json.dumps(review), headers={"Content-Type": "application/json"}
        )
        answer = conn.getresponse()
        assert answer.status == 200, answer.read()
        result: dict[str, Any] = json.loads(answer.read())["response"]
        return result
    finally:
        conn.close()


def client_cert(ca: CertificateAuthority, where: Path, name: str) -> tuple[Path, Path]:
    cert, key = ca.issue(name)
    where.mkdir(parents=True, exist_ok=True)
    (where / "tls.crt").write_bytes(cert_pem(cert))
    (where / "tls.key").write_bytes(key_pem(key))
    return where / "tls.crt", where / "tls.key"


def test_a_forged_review_without_the_api_servers_certificate_is_refused_in_tls(
    plane: ControlPlane, operator: Operator, tmp_path: Path
) -> None:
    k8s = Cluster(plane)
    live = k8s.vns()
    new = {**live, "spec": {**live["spec"], "plugins": [{"name": "text"}, {"name": "image"}]}}
    review = forged_review(new, live)
    with pytest.raises(ssl.SSLError) as refused:
        tls12_handshake(k8s, operator.port, None)
    print(f"\nTLS 1.2 handshake without a client certificate: {refused.value!r}")
    with pytest.raises((ssl.SSLError, ConnectionError)) as dropped:
        post_to_webhook(k8s, operator.port, review, None)
    print(f"POST without a client certificate: {dropped.value!r}")
    # The control: the API server's certificate completes the same handshake.
    tls12_handshake(k8s, operator.port, client_cert(plane.webhook_client_ca(), tmp_path, "a"))
    # A certificate of the cluster's CA (any user's) is not the API server's either.
    user = client_cert(
        CertificateAuthority.load(plane.ca_file, plane.pki_dir / "ca.key"),
        tmp_path / "user",
        "tenant-other",
    )
    with pytest.raises((ssl.SSLError, ConnectionError)):
        post_to_webhook(k8s, operator.port, review, user)


def test_with_the_api_servers_certificate_a_wrong_uid_gets_no_plan(
    plane: ControlPlane, operator: Operator, tmp_path: Path
) -> None:
    """Defense in depth: even a caller holding the webhook-client certificate learns
    nothing of an object whose metadata.uid it does not know; the control (the right uid)
    gets the plan, and `kubectl apply` through the API server still prints it."""
    k8s = Cluster(plane)
    live = k8s.vns()
    new = {**live, "spec": {**live["spec"], "plugins": [{"name": "text"}, {"name": "image"}]}}
    cert = client_cert(plane.webhook_client_ca(), tmp_path / "apiserver", "forger")
    guessed = {
        **live,
        "metadata": {**live["metadata"], "uid": "6f1c2d3e-aaaa-bbbb-cccc-0123456789ab"},
    }
    answer = post_to_webhook(k8s, operator.port, forged_review(new, guessed), cert)
    assert answer["allowed"] is True
    assert answer.get("warnings") == [
        "vectorschema: the plan is not known yet: this replica cannot match the request to "
        "the object it has seen (a standby replica, or the object changed meanwhile); the "
        "operator plans when it reconciles (see status.plan)"
    ]
    vouched = post_to_webhook(k8s, operator.port, forged_review(new, live), cert)
    assert any(w.startswith("vectorschema: plan ") for w in vouched.get("warnings", [])), vouched
    result = k8s.apply(namespace(plugins=["image", "text"], adopt=True), "--dry-run=server")
    assert result.returncode == 0, result.stderr
    assert any(w.startswith("vectorschema: plan ") for w in warnings_of(result)), result.stderr


# --- refusals and warnings on other objects ---------------------------------------------------


def test_a_conflicting_plugin_is_refused_naming_the_field(
    plane: ControlPlane, operator: Operator
) -> None:
    k8s = Cluster(plane)
    before = k8s.vns()
    result = k8s.apply(namespace(plugins=["image", "image-big"], adopt=True))
    assert result.returncode == 1
    assert 'admission webhook "plan.vectorschema.dev" denied the request: ' in result.stderr
    assert (
        "spec.plugins[1]: vector 'image' is defined differently by plugin 'image' "
        "(dense 3, Dot, float32) and plugin 'image-big' (dense 8, Dot, float32)" in result.stderr
    )
    print(f"\n$ kubectl apply -f catalog.yaml\n{result.stderr}")
    assert k8s.vns()["metadata"]["generation"] == before["metadata"]["generation"]

    create = k8s.apply(namespace("clash", plugins=["image", "image-big"]))
    assert create.returncode == 1 and "spec.plugins[1]: vector 'image'" in create.stderr


def test_a_collection_fed_by_an_unlisted_plugin_is_refused(
    plane: ControlPlane, operator: Operator
) -> None:
    k8s = Cluster(plane)
    doc = namespace("feeds", plugins=["text"], collections=[{"id": "docs", "plugins": ["image"]}])
    result = k8s.apply(doc, "--dry-run=server")
    assert result.returncode == 1
    assert (
        "spec.collections[0].plugins[0]: plugin 'image' (feeding collection 'docs') is not "
        "listed in spec.plugins" in result.stderr
    )


def test_what_the_tenancy_policy_forbids_is_refused(
    plane: ControlPlane, operator: Operator
) -> None:
    k8s = Cluster(plane)
    url = namespace("remote", plugins=["text"], qdrant={"url": "http://qdrant.elsewhere:6333"})
    result = k8s.apply(url, "--dry-run=server")
    assert result.returncode == 1
    assert (
        "denied the request: spec.qdrant.url: http://qdrant.elsewhere:6333 is not on the "
        "operator's allowlist" in result.stderr
    ), result.stderr
    name = namespace("theirs", plugins=["text"], collectionName="tenant-other_products")
    result = k8s.apply(name, "--dry-run=server")
    assert result.returncode == 1
    assert (
        "denied the request: spec.collectionName: 'tenant-other_products' must start with "
        "'tenant-acme_'" in result.stderr
    ), result.stderr


def test_a_missing_plugin_is_only_a_warning(plane: ControlPlane, operator: Operator) -> None:
    k8s = Cluster(plane)
    result = k8s.apply(namespace("later", plugins=["text", "arrives-later"]), "--dry-run=server")
    assert result.returncode == 0, result.stderr
    first, second = warnings_of(result)
    assert first.startswith("vectorschema: spec.plugins[1]: Plugin 'arrives-later' does not exist")
    assert "may arrive later in the same sync" in first
    assert second == "vectorschema: the plan is not known yet: it waits for Plugin(s) arrives-later"


# --- last: the operator stops, applies go on ---------------------------------------------------


def test_with_the_operator_stopped_applies_still_work(
    plane: ControlPlane, operator: Operator
) -> None:
    k8s = Cluster(plane)
    operator.stop()
    t0 = time.monotonic()
    result = k8s.apply(namespace(plugins=["text", "image"], adopt=True))  # not checked now
    assert result.returncode == 0, result.stderr
    assert warnings_of(result) == []
    assert time.monotonic() - t0 < 5
    # The configuration is still registered, and the API server still calls it: it ignores
    # the failure to reach it.
    hook = json.loads(
        k8s.run("get", "validatingwebhookconfiguration", CONFIGURATION, "-o", "json").stdout
    )["webhooks"][0]
    assert hook["failurePolicy"] == "Ignore"
    assert hook["sideEffects"] == "None"
    assert hook["timeoutSeconds"] == 5
    assert hook["clientConfig"]["url"] == f"https://127.0.0.1:{operator.port}/plan"
    assert k8s.vns()["spec"]["plugins"] == [{"name": "text"}, {"name": "image"}]
