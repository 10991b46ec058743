"""The in-cluster deployment (the kustomize base, manifests/) and `make run` (tools/run.py),
end to end.

Everything here runs on a second, private control plane (module-scoped), never on the
session's: the operators started here must not meet the in-process `operator` fixture of
other modules, `tools/run.py` applies the samples cluster-wide, and the last test deletes
the CRDs.

- On the fresh control plane, a server-side dry run of the base refuses nothing but what
  Kubernetes admission must refuse before the base's own namespace exists; one
  `kubectl apply -k manifests/` installs everything.
- RBAC: the Deployment's own command runs twice (two replicas, kopf peering) with the
  ServiceAccount's token, and serves Namespace resources: list/watch, status patches,
  Events, labelled Secrets (list/watch only: no `get`), finalizers, peering keep-alives,
  failover. Nothing beyond that is granted.
- `tools/run.py`: on a reachable cluster (`--once`), with its own control plane (stopped
  by SIGINT or SIGTERM, no process left behind), and its one-line failures.
- The documented uninstall order: Namespace resources first (while the operator runs),
  then `kubectl delete -k manifests/operator`, then vectorschema's two CRDs. Nothing hangs,
  kopf's shared CRDs stay, a Retain collection stays and a Delete one goes.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.e2e.operator_env import Kubectl, run_kubectl
from tests.helm import CHART, helm

from devenv import ControlPlane, ControlPlaneError, free_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MANIFESTS = REPO / "manifests"
RUN_PY = REPO / "tools" / "run.py"
START_TIMEOUT = float(os.environ.get("VECTORSCHEMA_E2E_START_TIMEOUT", "90"))

SYSTEM_NS = "vectorschema-system"
SA = "vectorschema-operator"
SA_USER = f"system:serviceaccount:{SYSTEM_NS}:{SA}"
PEERING = "vectorschema"
TENANT = "tenant-rbac"
VWC = "validatingwebhookconfigurations.admissionregistration.k8s.io"
WEBHOOK_CERT = "vectorschema-webhook-cert"

WaitFor = Callable[..., Any]


# --------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------


def alive(pid: int) -> bool:
    """Running and not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def processes_mentioning(text: str) -> list[str]:
    """Live processes whose command line contains ``text`` (like `pgrep -af`)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            line = cmdline(int(entry.name))
            if text in line and alive(int(entry.name)):
                found.append(f"{entry.name} {line}")
    return found


def stop(proc: subprocess.Popen[Any], grace: float = 20.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without Qdrant or cluster settings, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("QDRANT_URL", "QDRANT_API_KEY", "QDRANT_PATH", "KUBECONFIG")
    }
    env.update(extra)
    return env


# --------------------------------------------------------------------------------------
# Fixtures: a private control plane with the CRDs
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A control plane for this module only (the binaries come from the build cache)."""
    plane = ControlPlane(tmp_path_factory.mktemp("deploy-plane"))
    try:
        plane.start(timeout=START_TIMEOUT)
    except ControlPlaneError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="module")
def kc(plane: ControlPlane) -> Kubectl:
    """kubectl on the private control plane (admin, or ``kubeconfig=``)."""

    def run(
        *args: str, input: str | None = None, check: bool = True, kubeconfig: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run_kubectl(kubeconfig or plane.kubeconfig, *args, input=input, check=check)

    return run


def base_docs() -> list[dict[str, Any]]:
    """The kustomize base, as `kubectl kustomize manifests/` renders it."""
    out = run_kubectl(Path("/nonexistent"), "kustomize", str(MANIFESTS)).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def deployment_container() -> dict[str, Any]:
    (deployment,) = [d for d in base_docs() if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


@pytest.fixture(scope="module")
def fresh_dry_run(kc: Kubectl) -> subprocess.CompletedProcess[str]:
    """`kubectl apply --dry-run=server -k manifests/` on the control plane as it started."""
    assert kc("get", "crd", "-o", "name").stdout.strip() == "", "not a fresh control plane"
    return kc("apply", "--dry-run=server", "-k", str(MANIFESTS), check=False)


@pytest.fixture(scope="module")
def installed(kc: Kubectl, fresh_dry_run: Any) -> subprocess.CompletedProcess[str]:
    """The base installed as documented: one `kubectl apply -k manifests/`."""
    done = kc("apply", "-k", str(MANIFESTS), check=False)
    kc(
        "wait",
        "--for=condition=Established",
        "crd/namespaces.vectorschema.dev",
        "crd/plugins.vectorschema.dev",
        "crd/clusterkopfpeerings.kopf.dev",
        "--timeout=60s",
    )
    return done


@pytest.fixture(scope="module")
def crds(installed: Any) -> None:
    """The CRDs, installed by the base."""


# --------------------------------------------------------------------------------------
# The manifests
# --------------------------------------------------------------------------------------


def test_server_side_dry_run_on_a_fresh_control_plane(
    fresh_dry_run: subprocess.CompletedProcess[str],
) -> None:
    """Every object maps (no custom resource waits for a CRD of the same apply) and passes
    server-side validation, except that admission refuses objects in a namespace that does
    not exist yet, which a dry run cannot create: the base's own vectorschema-system.
    Those pass as soon as it exists (next test)."""
    docs = base_docs()
    out, err = fresh_dry_run.stdout, fresh_dry_run.stderr
    assert "resource mapping not found" not in err and "ensure CRDs" not in err, err
    in_system = [d for d in docs if d["metadata"].get("namespace") == SYSTEM_NS]
    others = [d for d in docs if d not in in_system]
    assert {d["kind"] for d in others} >= {"Namespace", "CustomResourceDefinition", "ClusterRole"}
    for doc in others:
        assert f"/{doc['metadata']['name']} created (server dry run)" in out, (doc, out, err)
    refusals = [ln for ln in err.splitlines() if ln.strip()]
    assert len(refusals) == len(in_system), err
    for line in refusals:
        assert f'namespaces "{SYSTEM_NS}" not found' in line, line


def test_one_apply_installs_everything(
    kc: Kubectl, installed: subprocess.CompletedProcess[str]
) -> None:
    assert installed.returncode == 0, installed.stderr
    assert installed.stderr.strip() == "", installed.stderr
    for doc in base_docs():
        where = ["-n", doc["metadata"]["namespace"]] if "namespace" in doc["metadata"] else []
        kc("get", doc["kind"].lower(), doc["metadata"]["name"], *where)
    assert {d["kind"] for d in base_docs()} == {
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",  # the webhook certificate's Secret, the shard layout Lease
        "RoleBinding",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ValidatingWebhookConfiguration",
    }
    # Now that the namespace exists, the server-side dry run passes for every object.
    again = kc("apply", "--dry-run=server", "-k", str(MANIFESTS))
    assert again.stderr.strip() == "", again.stderr
    dep = json.loads(kc("get", "deployment", SA, "-n", SYSTEM_NS, "-o", "json").stdout)
    assert dep["spec"]["replicas"] == 2
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == SA
    assert pod["affinity"]["podAntiAffinity"]
    (container,) = pod["containers"]
    script = " ".join(container["command"] + container["args"])
    assert "-m vectorschema.k8s.handlers" in script
    assert "--peering=vectorschema" in script and "--all-namespaces" in script
    assert "--standalone" not in script
    env = {e["name"]: e for e in container["env"]}
    assert env["QDRANT_URL"]["value"].startswith("http")
    assert env["QDRANT_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "qdrant-api-key",
        "key": "api-key",
        "optional": True,
    }
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["runAsNonRoot"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert set(container["resources"]) == {"requests", "limits"}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["livenessProbe"]["httpGet"]["port"] == "health"
    assert container["readinessProbe"]["httpGet"]["port"] in ("health", "metrics")


# --------------------------------------------------------------------------------------
# RBAC: the Deployment's command, as the ServiceAccount, two replicas
# --------------------------------------------------------------------------------------


def token_kubeconfig(plane: ControlPlane, token: str, path: Path) -> Path:
    ca = base64.b64encode(plane.ca_file.read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "c", "cluster": {"server": plane.server, "certificate-authority-data": ca}}
        ],
        "users": [{"name": SA, "user": {"token": token}}],
        "contexts": [
            {"name": "c", "context": {"cluster": "c", "user": SA, "namespace": SYSTEM_NS}}
        ],
        "current-context": "c",
    }
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


def can_i(kc: Kubectl, kubeconfig: Path, verb: str, resource: str, *extra: str) -> bool:
    done = kc("auth", "can-i", verb, resource, *extra, kubeconfig=kubeconfig, check=False)
    assert done.stdout.strip() in ("yes", "no"), (done.stdout, done.stderr)
    return done.stdout.strip() == "yes"


GRANTED = [
    ("get", "namespaces.vectorschema.dev", "-n", TENANT),
    ("list", "namespaces.vectorschema.dev", "-A"),
    ("watch", "namespaces.vectorschema.dev", "-A"),
    ("patch", "namespaces.vectorschema.dev", "-n", TENANT),
    ("patch", "namespaces.vectorschema.dev", "--subresource=status", "-n", TENANT),
    ("list", "plugins.vectorschema.dev"),
    ("watch", "plugins.vectorschema.dev"),
    ("patch", "plugins.vectorschema.dev", "--subresource=status"),
    ("list", "secrets", "-A"),
    ("watch", "secrets", "-A"),
    ("create", "events", "-n", TENANT),
    # Kubernetes namespaces' labels decide the scope (VECTORSCHEMA_NAMESPACE_SELECTOR).
    ("list", "namespaces"),
    ("watch", "namespaces"),
    ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
    ("watch", "clusterkopfpeerings.kopf.dev"),
    ("create", "clusterkopfpeerings.kopf.dev"),
    ("patch", f"clusterkopfpeerings.kopf.dev/{PEERING}"),
    # The admission webhook: its certificate Secret, its configuration's caBundle.
    ("create", "secrets", "-n", SYSTEM_NS),
    ("get", f"secrets/{WEBHOOK_CERT}", "-n", SYSTEM_NS),
    ("get", f"{VWC}/vectorschema.dev"),
    ("update", f"{VWC}/vectorschema.dev"),
]
DENIED = [
    ("create", "namespaces.vectorschema.dev", "-n", TENANT),
    ("update", "namespaces.vectorschema.dev", "-n", TENANT),
    ("delete", "namespaces.vectorschema.dev", "-n", TENANT),
    ("update", "namespaces.vectorschema.dev", "--subresource=status", "-n", TENANT),
    ("get", "plugins.vectorschema.dev"),
    ("patch", "plugins.vectorschema.dev"),
    ("delete", "plugins.vectorschema.dev"),
    ("get", "secrets", "-n", TENANT),
    ("create", "secrets", "-n", TENANT),
    ("patch", "secrets", "-n", TENANT),
    ("delete", "secrets", "-n", TENANT),
    ("get", "namespaces"),
    ("patch", "namespaces"),
    ("delete", "namespaces"),
    ("patch", "events", "-n", TENANT),
    ("create", "events.events.k8s.io", "-n", TENANT),
    ("create", "customresourcedefinitions.apiextensions.k8s.io"),
    ("delete", f"clusterkopfpeerings.kopf.dev/{PEERING}"),
    ("patch", "clusterkopfpeerings.kopf.dev/someone-else"),
    ("list", "kopfpeerings.kopf.dev", "-A"),
    ("get", "configmaps", "-n", TENANT),
    ("create", "pods", "-n", TENANT),
    ("create", "clusterrolebindings"),
    ("create", VWC),
    ("update", f"{VWC}/someone-else"),
    ("delete", f"{VWC}/vectorschema.dev"),
    ("create", "mutatingwebhookconfigurations.admissionregistration.k8s.io"),
]


class Replica:
    """One replica of a Deployment (the base's, or ``container``): its command and its
    environment, run here; the embedded Qdrant replaces QDRANT_URL, and the probe and
    metrics ports are free local ones."""

    def __init__(
        self,
        index: int,
        kubeconfig: Path,
        tmp: Path,
        allowed_url: str | None = None,
        container: dict[str, Any] | None = None,
        name: str = "replica",
        namespace: str = SYSTEM_NS,
    ) -> None:
        container = container or deployment_container()
        command, args = container["command"], container["args"]
        assert command == ["/bin/sh", "-c"] and len(args) == 1, command
        liveness = "--liveness=http://0.0.0.0:8081/healthz"
        assert liveness in args[0]
        self.port = free_port()
        self.metrics_port = free_port()
        script = args[0].replace(liveness, f"--liveness=http://127.0.0.1:{self.port}/healthz")
        # The Deployment's environment: its webhook Service and certificate Secret, its
        # shard settings (each replica holds the shard layout lease with the ServiceAccount's
        # rights; POD_NAMESPACE as the downward API sets it), with the webhook on a free
        # loopback port of this machine instead of the Pod's 9443. (An empty value comes
        # back from the API server without its `value` key; a Pod still gets it, empty.)
        own = {
            e["name"]: e.get("value", "") for e in container.get("env", []) if "valueFrom" not in e
        }
        own.pop("QDRANT_URL", None)
        self.store = tmp / f"{name}-qdrant-{index}"  # a local store is one process's
        env = clean_env(
            **{
                **own,
                "POD_NAMESPACE": namespace,
                "VECTORSCHEMA_WEBHOOK_PORT": str(free_port()),
                "VECTORSCHEMA_WEBHOOK_CERT_DIR": str(tmp / f"{name}-webhook-{index}"),
                "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # kopf, python
                "KUBECONFIG": str(kubeconfig),
                "QDRANT_PATH": str(self.store),
                "VECTORSCHEMA_METRICS_PORT": str(self.metrics_port),
                "VECTORSCHEMA_RESYNC_SECONDS": "2",
                "VECTORSCHEMA_DELETE_RETRIES": "1",
                # the admin allows the tenant's own (absent) Qdrant, if there is one
                **({"VECTORSCHEMA_ALLOWED_QDRANT_URLS": allowed_url} if allowed_url else {}),
            }
        )
        self.log = tmp / f"{name}-{index}.log"
        with self.log.open("wb") as fh:
            self.proc = subprocess.Popen(
                [*command, script],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                cwd=tmp,
                start_new_session=True,
            )

    @property
    def priority(self) -> int | None:
        found = re.search(r"--priority=(\d+)", cmdline(self.proc.pid))
        return int(found.group(1)) if found else None

    def get(self, path: str) -> tuple[int, str]:
        """GET on the metrics port (/metrics, /readyz): status and body."""
        url = f"http://127.0.0.1:{self.metrics_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return int(r.status), r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def healthz(self) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=5) as r:
            status: int = r.status
            return status

    def text(self) -> str:
        return self.log.read_text(errors="replace")


TENANT_DOCS = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {TENANT}}}
---
apiVersion: vectorschema.dev/v1alpha1
kind: Plugin
metadata: {{name: rbac-text}}
spec:
  vectors:
    - {{name: text_v1, type: dense, size: 8, distance: Cosine}}
---
apiVersion: v1
kind: Secret
metadata:
  name: remote-qdrant
  namespace: {TENANT}
  labels: {{vectorschema.dev/qdrant-credentials: "true"}}
stringData: {{api-key: not-a-real-key}}
---
# Named plugin + inline vectors, embedded Qdrant.
apiVersion: vectorschema.dev/v1alpha1
kind: Namespace
metadata: {{name: search, namespace: {TENANT}}}
spec:
  plugins:
    - name: rbac-text
    - name: inline
      vectors:
        - {{name: image_v1, type: dense, size: 4, distance: Dot}}
---
# Reads its API key from the Secret, then finds no Qdrant there.
apiVersion: vectorschema.dev/v1alpha1
kind: Namespace
metadata: {{name: remote, namespace: {TENANT}}}
spec:
  qdrant:
    url: http://127.0.0.1:{{port}}
    apiKeySecretRef: {{name: remote-qdrant, key: api-key}}
  plugins:
    - name: rbac-text
"""


AFTER_FAILOVER = f"""
apiVersion: vectorschema.dev/v1alpha1
kind: Namespace
metadata: {{name: after, namespace: {TENANT}}}
spec:
  plugins:
    - name: rbac-text
"""


def ready(kc: Kubectl, name: str, namespace: str = TENANT) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        obj: dict[str, Any] = json.loads(
            kc("get", "namespaces.vectorschema.dev", name, "-n", namespace, "-o", "json").stdout
        )
        conds = {c["type"]: c for c in obj.get("status", {}).get("conditions", [])}
        ok = conds.get("Ready", {}).get("status") == "True"
        return (
            obj
            if ok and obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
            else None
        )

    return check


def test_rbac_suffices_for_two_peered_replicas_and_grants_nothing_more(
    plane: ControlPlane,
    kc: Kubectl,
    installed: Any,
    tmp_path: Path,
    wait_for: WaitFor,
) -> None:
    token = kc("create", "token", SA, "-n", SYSTEM_NS, "--duration=1h").stdout.strip()
    sa_config = token_kubeconfig(plane, token, tmp_path / "operator.kubeconfig")
    assert kc("auth", "whoami", "-o", "json", kubeconfig=sa_config).stdout.count(SA_USER) == 1

    # RBAC can take a moment to reach the authorizer.
    wait_for(lambda: can_i(kc, sa_config, *GRANTED[0]), timeout=30, message="RBAC to apply")
    missing = [g for g in GRANTED if not can_i(kc, sa_config, *g)]
    assert not missing, f"not granted: {missing}"
    excess = [d for d in DENIED if can_i(kc, sa_config, *d)]
    assert not excess, f"granted, but the operator does not need it: {excess}"

    # The base holds no custom resource: the first replica creates its ClusterKopfPeering.
    assert kc("get", "clusterkopfpeering", PEERING, check=False).returncode != 0
    remote_port = free_port()
    allowed = f"http://127.0.0.1:{remote_port}"
    replicas = [Replica(i, sa_config, tmp_path, allowed) for i in range(2)]
    try:

        def peers() -> dict[str, Any] | None:
            obj = json.loads(kc("get", "clusterkopfpeering", PEERING, "-o", "json").stdout)
            status: dict[str, Any] = obj.get("status") or {}
            return status if len(status) == 2 else None

        status = wait_for(peers, timeout=60, message="both replicas in the peering")
        # Both replicas serve the webhook with the one certificate in the Secret, whose CA
        # they wrote into the base's webhook configuration.
        secret = json.loads(kc("get", "secret", WEBHOOK_CERT, "-n", SYSTEM_NS, "-o", "json").stdout)
        hook = json.loads(kc("get", VWC, "vectorschema.dev", "-o", "json").stdout)["webhooks"][0]
        assert hook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
        assert hook["clientConfig"]["service"]["name"] == "vectorschema-webhook"
        # Equal priorities would freeze both: each replica draws its own.
        priorities = {p["priority"] for p in status.values()}
        assert len(priorities) == 2 and priorities == {r.priority for r in replicas}
        active, standby = sorted(replicas, key=lambda r: r.priority or 0, reverse=True)
        assert active.healthz() == 200 and standby.healthz() == 200
        # Both are ready (started), the standby too: readiness is not leadership.
        assert active.get("/readyz") == (200, "ok\n") and standby.get("/readyz")[0] == 200

        kc("apply", "-f", "-", input=TENANT_DOCS.replace("{port}", str(remote_port)))
        search = wait_for(ready(kc, "search"), timeout=60, message="search Ready")
        assert sorted(search["status"]["vectors"]) == ["image_v1", "text_v1"]
        assert search["metadata"]["finalizers"] == ["vectorschema.dev/collection"]

        plugin = json.loads(kc("get", "plugins.vectorschema.dev", "rbac-text", "-o", "json").stdout)
        assert plugin.get("status", {}).get("vectors") == ["text_v1"], plugin.get("status")

        def events() -> list[dict[str, Any]]:
            out = kc(
                "get",
                "events",
                "-n",
                TENANT,
                "--field-selector=involvedObject.name=search",
                "-o",
                "json",
            ).stdout
            items: list[dict[str, Any]] = json.loads(out)["items"]
            return items

        posted = wait_for(events, timeout=30, message="an Event about search")
        assert {e["source"]["component"] for e in posted} == {"vectorschema-operator"}
        assert {e["reportingComponent"] for e in posted} == {"vectorschema-operator"}

        # The active replica counts what it serves; the paused standby serves nothing.
        def served() -> str | None:
            text = active.get("/metrics")[1]
            ok = 'vectorschema_namespaces{ready="True",reason="Reconciled"} 1.0' in text
            return text if ok else None

        text = wait_for(served, timeout=30, message="search in the active replica's gauges")
        assert 'vectorschema_reconcile_total{result="ready"}' in text
        assert 'vectorschema_qdrant_requests_total{outcome="ok",server="embedded"}' in text
        assert "vectorschema_namespaces{" not in standby.get("/metrics")[1]

        def remote_unavailable() -> dict[str, Any] | None:
            obj = json.loads(
                kc(
                    "get", "namespaces.vectorschema.dev", "remote", "-n", TENANT, "-o", "json"
                ).stdout
            )
            conds = {c["type"]: c for c in obj.get("status", {}).get("conditions", [])}
            return (
                conds.get("Ready")
                if conds.get("Ready", {}).get("reason") == "QdrantUnavailable"
                else None
            )

        # The Secret was read (a 403 would say so, with another reason): only Qdrant is missing.
        cond = wait_for(remote_unavailable, timeout=60, message="remote to reach Qdrant")
        assert "Secret" not in cond["message"], cond

        # The standby takes over when the active replica goes.
        stop(active.proc)
        kc("apply", "-f", "-", input=AFTER_FAILOVER)
        after = wait_for(ready(kc, "after"), timeout=60, message="the standby to serve")
        assert after["status"]["vectors"] == ["text_v1"]
        assert "Resuming operations" in standby.text()

        # Finalizers come off (patch): the resources go.
        kc(
            "delete",
            "namespaces.vectorschema.dev",
            "search",
            "remote",
            "after",
            "-n",
            TENANT,
            "--timeout=60s",
        )
    finally:
        for replica in replicas:
            stop(replica.proc)
        # Nothing left for other tests of this module (the finalizers are gone or the
        # resources never existed); the namespace goes without waiting.
        kc("delete", "namespace", TENANT, "--wait=false", "--ignore-not-found", check=False)

    logs = "\n".join(r.text() for r in replicas)
    for denial in ("Forbidden", "forbidden", " 403", "Not enough permissions"):
        assert denial not in logs, f"{denial!r} in the replicas' logs:\n{logs[-4000:]}"
    for replica in replicas:
        assert not alive(replica.proc.pid)


# --------------------------------------------------------------------------------------
# tools/run.py
# --------------------------------------------------------------------------------------


def run_py(
    *args: str, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RUN_PY), *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def operator_pid(out: str) -> int:
    found = re.search(r"operator: started \(pid (\d+)\)", out)
    assert found, out
    return int(found.group(1))


CATALOG_READY = re.compile(r"^tenant-acme\s+catalog\s+True\s+Reconciled\s+3\s", re.MULTILINE)


def test_run_once_on_the_reachable_cluster_of_the_kubeconfig(
    plane: ControlPlane, crds: None, tmp_path: Path
) -> None:
    env = clean_env(KUBECONFIG=str(plane.kubeconfig), QDRANT_PATH=str(tmp_path / "qdrant"))
    done = run_py("--once", "--state-dir", str(tmp_path / "state"), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "cluster: the current kubeconfig's" in out, out
    assert "starting the local control plane" not in out
    assert CATALOG_READY.search(out), out
    assert "$ kubectl get vplugin" in out and "multilingual-e5" in out
    assert f"export KUBECONFIG={plane.kubeconfig}" in out
    assert "Traceback" not in done.stderr
    assert not alive(operator_pid(out))
    assert (tmp_path / "state" / "operator.log").stat().st_size > 0


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_run_starts_its_own_control_plane_and_stops_everything_on_a_signal(
    tmp_path: Path, signum: signal.Signals, wait_for: WaitFor
) -> None:
    state = tmp_path / "state"
    env = clean_env(
        KUBECONFIG=str(tmp_path / "no-such-kubeconfig"), QDRANT_PATH=str(tmp_path / "qdrant")
    )
    proc = subprocess.Popen(
        [sys.executable, str(RUN_PY), "--state-dir", str(state)],
        env=env,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    running = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Ctrl-C here stops"):
                running.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert running.wait(timeout=240), "".join(lines)
        out = "".join(lines)
        assert "cluster: none reachable" in out and "no-such-kubeconfig" in out, out
        assert CATALOG_READY.search(out), out
        pid = operator_pid(out)
        assert alive(pid)
        assert len(processes_mentioning(str(state / "run-cluster"))) == 3
        # On its own control plane it serves the admission webhook: a server-side dry run of
        # the sample without one of its plugins prints the plan.
        assert "webhook: served on 127.0.0.1:" in out, out
        sample = yaml.safe_load((REPO / "manifests" / "samples" / "20-namespace.yaml").read_text())
        sample["spec"]["plugins"] = sample["spec"]["plugins"][:2]
        sample["spec"]["collections"] = [{"id": "col_reviews", "plugins": ["multilingual-e5"]}]

        def planned() -> str | None:  # the webhook server starts just after the operator
            dry = run_kubectl(
                state / "run-cluster" / "admin.kubeconfig",
                "apply",
                "--dry-run=server",
                "-f",
                "-",
                input=yaml.safe_dump(sample),
            )
            return dry.stderr if "Warning: vectorschema: plan " in dry.stderr else None

        warned = wait_for(planned, 30, "the plan from the webhook of `make run`", 0.5)
        assert "is destructive: removes vector" in warned, warned
        time.sleep(1)  # it keeps running
        assert proc.poll() is None

        proc.send_signal(signum)
        assert proc.wait(timeout=60) == 0, "".join(lines)
    finally:
        stop(proc)
        reader.join(timeout=10)
    out = "".join(lines)
    assert "stopping the operator" in out and "stopping the local control plane" in out, out
    assert "Traceback" not in out, out
    assert not alive(pid)
    assert processes_mentioning(str(state)) == []


def test_run_refuses_a_store_locked_by_another_process(plane: ControlPlane, tmp_path: Path) -> None:
    store = tmp_path / "qdrant"
    store.mkdir()
    with (store / ".lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running operator holds it
        env = clean_env(KUBECONFIG=str(plane.kubeconfig), QDRANT_PATH=str(store))
        done = run_py("--once", "--state-dir", str(tmp_path / "state"), env=env, timeout=60)
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line.startswith("run: error: the embedded Qdrant store"), line
    assert "in use by another process" in line and f"pid {os.getpid()}" in line, line
    assert "QDRANT_PATH" in line


def test_run_reports_an_operator_that_exits_early(
    plane: ControlPlane, crds: None, tmp_path: Path
) -> None:
    broken = tmp_path / "broken" / "vectorschema"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('broken on purpose')\n")
    env = clean_env(
        KUBECONFIG=str(plane.kubeconfig),
        QDRANT_PATH=str(tmp_path / "qdrant"),
        PYTHONPATH=str(broken.parent),  # shadows the real package, in the operator only
    )
    done = run_py("--once", "--state-dir", str(tmp_path / "state"), env=env, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    first, *tail = done.stderr.splitlines()
    assert first.startswith("run: error: the operator exited early with status"), first
    assert "operator.log" in first
    assert any("broken on purpose" in line for line in tail), done.stderr
    assert not alive(operator_pid(done.stdout))


# --------------------------------------------------------------------------------------
# Scoping: two installations of the chart that split the cluster
# --------------------------------------------------------------------------------------

MARKER = "body-marker-7f3a"  # in every resource's annotations: a log line printing a body shows it


def scoped_doc(namespace: str, name: str, team: str | None) -> str:
    labels = f"\n  labels: {{team: {team}}}" if team else ""
    return f"""
apiVersion: vectorschema.dev/v1alpha1
kind: Namespace
metadata:
  name: {name}
  namespace: {namespace}
  annotations: {{example.com/note: {MARKER}}}{labels}
spec:
  plugins:
    - name: inline
      vectors: [{{name: v, type: dense, size: 4, distance: Cosine}}]
"""


def test_two_installations_with_disjoint_scopes_each_serve_only_their_own(
    plane: ControlPlane, kc: Kubectl, installed: Any, tmp_path: Path, wait_for: WaitFor
) -> None:
    """Release A serves namespaces team-x and team-y (kopf namespace patterns), only
    resources labelled team=a; release B serves every namespace, only team=b (a selector
    on the resources' own labels, a handler filter, opted in by the admin). Each runs its
    Deployment's own command with its own ServiceAccount's token (the chart's RBAC: A's
    tenant role is bound in team-x and team-y only) and its own ClusterKopfPeering. A
    logs JSON."""
    kube = ["--kubeconfig", str(plane.kubeconfig)]
    releases = {
        "scope-a": {"watch": {"namespaces": ["team-x", "team-y"], "labelSelector": "team=a",
                              "objectLabelScope": True},
                    "logFormat": "json"},
        "scope-b": {"watch": {"namespaces": [], "labelSelector": "team=b",
                              "objectLabelScope": True}},
    }  # fmt: skip
    for ns in ("team-x", "team-y", "team-z"):
        kc("create", "namespace", ns)
    docs = [
        scoped_doc("team-z", "a-elsewhere", "a"),  # team=a, but not in A's namespaces
        scoped_doc("team-x", "unlabelled", None),  # nobody's
        scoped_doc("team-y", "c1", "c"),  # nobody's
    ]
    kc("apply", "-f", "-", input="\n---\n".join(docs))
    replicas: dict[str, Replica] = {}
    try:
        for release, values in releases.items():
            file = tmp_path / f"{release}.yaml"
            file.write_text(yaml.safe_dump(values))
            helm("install", release, str(CHART), "-n", f"{release}-system", "--create-namespace",
                 "-f", str(file), *kube)  # fmt: skip
            full = f"{release}-vectorschema"
            (dep,) = json.loads(
                kc("get", "deployments", "-n", f"{release}-system", "-o", "json").stdout
            )["items"]
            token = kc("create", "token", full, "-n", f"{release}-system").stdout.strip()
            config = token_kubeconfig(plane, token, tmp_path / f"{release}.kubeconfig")
            (container,) = dep["spec"]["template"]["spec"]["containers"]
            replicas[release] = Replica(
                0, config, tmp_path, None, container, name=release, namespace=f"{release}-system"
            )
        kc("apply", "-f", "-", input=scoped_doc("team-x", "a1", "a") + "---" + scoped_doc(
            "team-y", "b1", "b") + "---" + scoped_doc("team-x", "b2", "b"))  # fmt: skip
        for namespace, name in (("team-x", "a1"), ("team-y", "b1"), ("team-x", "b2")):
            try:
                wait_for(ready(kc, name, namespace), timeout=60, message=f"{namespace}/{name}")
            except AssertionError as exc:
                logs = "\n".join(f"--- {r}:\n{p.text()[-3000:]}" for r, p in replicas.items())
                raise AssertionError(f"{exc}\n{logs}") from None
        for release, replica in replicas.items():
            assert replica.get("/readyz")[0] == 200, release
            peers = (
                json.loads(
                    kc("get", "clusterkopfpeering", f"{release}-vectorschema", "-o", "json").stdout
                ).get("status")
                or {}
            )
            assert len(peers) == 1, (release, peers)  # its own peering, cluster-scoped
    finally:
        for replica in replicas.values():
            stop(replica.proc)
        for release in releases:
            helm("uninstall", release, "-n", f"{release}-system", *kube, check=False)

    # Nobody touched what is in neither scope: no finalizer, no status.
    for namespace, name in (("team-z", "a-elsewhere"), ("team-x", "unlabelled"), ("team-y", "c1")):
        obj = json.loads(
            kc("get", "namespaces.vectorschema.dev", name, "-n", namespace, "-o", "json").stdout
        )
        assert not obj["metadata"].get("finalizers") and not obj.get("status"), obj
    from qdrant_client import QdrantClient

    for release, expected in (("scope-a", {"team-x_a1"}), ("scope-b", {"team-y_b1", "team-x_b2"})):
        client = QdrantClient(path=str(replicas[release].store))
        try:
            assert {c.name for c in client.get_collections().collections} == expected, release
        finally:
            client.close()
    for release, replica in replicas.items():
        text = replica.text()
        for denial in ("Forbidden", "forbidden", " 403", "Not enough permissions"):
            assert denial not in text, f"{release}: {denial!r} in\n{text[-3000:]}"
        assert MARKER not in text, f"{release} logged a whole resource body"
    # JSON logs: one object a line; each line about a resource names it.
    lines = [json.loads(line) for line in replicas["scope-a"].text().splitlines() if line.strip()]
    assert [ln for ln in lines if ln.get("object", {}).get("name") == "a1"], lines[-20:]
    for line in lines:
        if "team-x/a1" in line["message"]:
            assert line.get("object", {}).get("name") == "a1", line
    ready_lines = [ln for ln in lines if "Ready=True/Reconciled" in ln["message"]]
    assert ready_lines and all(ln["object"]["kind"] == "Namespace" for ln in ready_lines)
    for namespace, name in (("team-x", "a1"), ("team-y", "b1"), ("team-x", "b2")):
        kc("patch", "namespaces.vectorschema.dev", name, "-n", namespace, "--type=merge",
           "-p", '{"metadata":{"finalizers":null}}')  # fmt: skip


# --------------------------------------------------------------------------------------
# Uninstall (last: it deletes the CRDs of this module's control plane)
# --------------------------------------------------------------------------------------

UNINSTALL_DOCS = "\n---\n".join(
    [
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: tenant-bye}",
        *(
            f"""
apiVersion: vectorschema.dev/v1alpha1
kind: Namespace
metadata: {{name: {name}, namespace: tenant-bye}}
spec:
  deletionPolicy: {policy}
  plugins:
    - name: inline
      vectors: [{{name: v, type: dense, size: 4, distance: Cosine}}]
"""
            for name, policy in (("keep", "Retain"), ("drop", "Delete"))
        ),
    ]
)


def test_documented_uninstall_order(
    plane: ControlPlane, kc: Kubectl, installed: Any, tmp_path: Path, wait_for: WaitFor
) -> None:
    """docs/how-to/uninstall.md: 1. delete the Namespace resources while the operator runs (each
    one's deletionPolicy decides its collection); 2. `kubectl delete -k manifests/operator`;
    3. delete vectorschema's two CRDs. Each step returns promptly (no finalizer is left to
    wait for), kopf's peering CRDs, shared with other operators, stay."""
    token = kc("create", "token", SA, "-n", SYSTEM_NS, "--duration=1h").stdout.strip()
    sa_config = token_kubeconfig(plane, token, tmp_path / "operator.kubeconfig")
    replica = Replica(0, sa_config, tmp_path)
    try:
        kc("apply", "-f", "-", input=UNINSTALL_DOCS)
        for name in ("keep", "drop"):
            wait_for(ready(kc, name, "tenant-bye"), timeout=60, message=f"{name} Ready")
        # Every Namespace resource of the cluster (tools/run.py's tests left one, too).
        kc("delete", "namespaces.vectorschema.dev", "--all", "-A", "--timeout=60s")
        assert kc("get", "namespaces.vectorschema.dev", "-A", "-o", "name").stdout == ""
    finally:
        stop(replica.proc)
    kc("delete", "-k", str(MANIFESTS / "operator"), "--timeout=60s")
    assert kc("get", "namespace", SYSTEM_NS, check=False).returncode != 0
    kc("delete", "crd", "namespaces.vectorschema.dev", "plugins.vectorschema.dev", "--timeout=60s")
    kc("get", "crd", "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev")
    kc("get", "clusterkopfpeering", PEERING)

    from qdrant_client import QdrantClient

    client = QdrantClient(path=str(replica.store))
    try:
        assert client.collection_exists("tenant-bye_keep")
        metadata = client.get_collection("tenant-bye_keep").config.metadata or {}
        assert "vectorschema.dev/owner" not in metadata, metadata
        assert not client.collection_exists("tenant-bye_drop")
    finally:
        client.close()
