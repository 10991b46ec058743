"""The in-cluster deployment (manifests/deploy/) and `make run` (tools/run.py), end to end.

Everything here runs on a second, private control plane (module-scoped), never on the
session's: the operators started here must not meet the in-process `operator` fixture of
other modules, and `tools/run.py` applies the samples cluster-wide.

- The manifests pass server-side validation, and the documented `kubectl apply` installs them.
- RBAC: the Deployment's own command runs twice (two replicas, kopf peering) with the
  ServiceAccount's token, and serves Namespace resources: list/watch, status patches,
  Events, Secrets, finalizers, peering keep-alives, failover. Nothing beyond that is
  granted.
- `tools/run.py`: on a reachable cluster (`--once`), with its own control plane (stopped
  by SIGINT or SIGTERM, no process left behind), and its one-line failures.
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
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.e2e.operator_env import Kubectl, run_kubectl

from devenv import ControlPlane, ControlPlaneError, free_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DEPLOY = REPO / "manifests" / "deploy"
RUN_PY = REPO / "tools" / "run.py"
START_TIMEOUT = float(os.environ.get("VECTORSCHEMA_E2E_START_TIMEOUT", "90"))

SYSTEM_NS = "vectorschema-system"
SA = "vectorschema-operator"
SA_USER = f"system:serviceaccount:{SYSTEM_NS}:{SA}"
PEERING = "vectorschema"
TENANT = "tenant-rbac"

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


@pytest.fixture(scope="module")
def crds(kc: Kubectl) -> None:
    kc("apply", "-f", str(REPO / "crds"))
    kc(
        "wait",
        "--for=condition=Established",
        "crd/namespaces.vectorschema.dev",
        "crd/plugins.vectorschema.dev",
        "--timeout=60s",
    )


def deploy_docs() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def deployment_container() -> dict[str, Any]:
    (deployment,) = [d for d in deploy_docs() if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


@pytest.fixture(scope="module")
def installed(kc: Kubectl, crds: None) -> list[str]:
    """manifests/deploy installed as documented: apply; wait for the peering CRD; apply.

    Returns the errors of the first apply (none, or kubectl's refusal of the
    ClusterKopfPeering whose CRD the same invocation created).
    """
    args = ("apply", "-f", str(REPO / "crds"), "-f", str(DEPLOY))
    first = kc(*args, check=False)
    errors = [ln for ln in first.stderr.splitlines() if ln.strip()]
    kc("wait", "--for=condition=Established", "crd/clusterkopfpeerings.kopf.dev", "--timeout=60s")
    kc(*args)
    return errors


# --------------------------------------------------------------------------------------
# The manifests
# --------------------------------------------------------------------------------------


def test_documented_apply_installs_everything(kc: Kubectl, installed: list[str]) -> None:
    # On a fresh cluster kubectl may refuse the peering object in the first pass (it
    # cannot map a kind whose CRD the same invocation created), and only that.
    for line in installed:
        assert "ClusterKopfPeering" in line or "ensure CRDs are installed first" in line, line
    kc("get", "clusterkopfpeering", PEERING)
    kc("get", "serviceaccount", SA, "-n", SYSTEM_NS)
    kc("get", "clusterrole,clusterrolebinding", SA)
    dep = json.loads(kc("get", "deployment", SA, "-n", SYSTEM_NS, "-o", "json").stdout)
    assert dep["spec"]["replicas"] == 2
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == SA
    (container,) = pod["containers"]
    script = " ".join(container["command"] + container["args"])
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
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_server_side_dry_run_accepts_every_manifest(kc: Kubectl, crds: None) -> None:
    """Once crds/ and what the rest lives in (its namespace, the peering CRDs) exist, the
    API server validates every object of manifests/deploy (without creating any)."""
    docs = deploy_docs()
    prerequisites = [d for d in docs if d["kind"] in ("Namespace", "CustomResourceDefinition")]
    assert {d["metadata"]["name"] for d in prerequisites} == {
        SYSTEM_NS,
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    }
    kc("apply", "-f", "-", input=yaml.safe_dump_all(prerequisites))
    kc("wait", "--for=condition=Established", "crd/clusterkopfpeerings.kopf.dev", "--timeout=60s")

    existed = kc("get", "deployment", SA, "-n", SYSTEM_NS, check=False).returncode == 0

    out = kc("apply", "--dry-run=server", "-f", str(DEPLOY)).stdout
    for doc in docs:
        assert f"/{doc['metadata']['name']} " in out, out
    if not existed:  # (this module's other tests may have installed them for real)
        assert kc("get", "deployment", SA, "-n", SYSTEM_NS, check=False).returncode != 0
        assert kc("get", "clusterrole", SA, check=False).returncode != 0


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
    ("get", "secrets", "-n", TENANT),
    ("watch", "secrets", "-A"),
    ("create", "events", "-n", TENANT),
    ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
    ("watch", "clusterkopfpeerings.kopf.dev"),
    ("patch", f"clusterkopfpeerings.kopf.dev/{PEERING}"),
]
DENIED = [
    ("create", "namespaces.vectorschema.dev", "-n", TENANT),
    ("update", "namespaces.vectorschema.dev", "-n", TENANT),
    ("delete", "namespaces.vectorschema.dev", "-n", TENANT),
    ("update", "namespaces.vectorschema.dev", "--subresource=status", "-n", TENANT),
    ("get", "plugins.vectorschema.dev"),
    ("patch", "plugins.vectorschema.dev"),
    ("delete", "plugins.vectorschema.dev"),
    ("create", "secrets", "-n", TENANT),
    ("patch", "secrets", "-n", TENANT),
    ("delete", "secrets", "-n", TENANT),
    ("list", "namespaces"),
    ("delete", "namespaces"),
    ("patch", "events", "-n", TENANT),
    ("create", "events.events.k8s.io", "-n", TENANT),
    ("create", "customresourcedefinitions.apiextensions.k8s.io"),
    ("create", "clusterkopfpeerings.kopf.dev"),
    ("delete", f"clusterkopfpeerings.kopf.dev/{PEERING}"),
    ("patch", "clusterkopfpeerings.kopf.dev/someone-else"),
    ("list", "kopfpeerings.kopf.dev", "-A"),
    ("get", "configmaps", "-n", TENANT),
    ("create", "pods", "-n", TENANT),
    ("create", "clusterrolebindings"),
]


class Replica:
    """One replica of the Deployment: its container command, run here."""

    def __init__(self, index: int, kubeconfig: Path, tmp: Path) -> None:
        container = deployment_container()
        command, args = container["command"], container["args"]
        assert command == ["/bin/sh", "-c"] and len(args) == 1, command
        liveness = "--liveness=http://0.0.0.0:8080/healthz"
        assert liveness in args[0]
        self.port = free_port()
        script = args[0].replace(liveness, f"--liveness=http://127.0.0.1:{self.port}/healthz")
        env = clean_env(
            PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # kopf, python
            KUBECONFIG=str(kubeconfig),
            QDRANT_PATH=str(tmp / f"qdrant-{index}"),  # a local store is one process's
            VECTORSCHEMA_RESYNC_SECONDS="2",
            VECTORSCHEMA_DELETE_RETRIES="1",
            PYTHONUNBUFFERED="1",
        )
        self.log = tmp / f"replica-{index}.log"
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
metadata: {{name: remote-qdrant, namespace: {TENANT}}}
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


def ready(kc: Kubectl, name: str) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        obj: dict[str, Any] = json.loads(
            kc("get", "namespaces.vectorschema.dev", name, "-n", TENANT, "-o", "json").stdout
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
    installed: list[str],
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

    replicas = [Replica(i, sa_config, tmp_path) for i in range(2)]
    try:

        def peers() -> dict[str, Any] | None:
            obj = json.loads(kc("get", "clusterkopfpeering", PEERING, "-o", "json").stdout)
            status: dict[str, Any] = obj.get("status") or {}
            return status if len(status) == 2 else None

        status = wait_for(peers, timeout=60, message="both replicas in the peering")
        # Equal priorities would freeze both: each replica draws its own.
        priorities = {p["priority"] for p in status.values()}
        assert len(priorities) == 2 and priorities == {r.priority for r in replicas}
        active, standby = sorted(replicas, key=lambda r: r.priority or 0, reverse=True)
        assert active.healthz() == 200 and standby.healthz() == 200

        kc("apply", "-f", "-", input=TENANT_DOCS.replace("{port}", str(free_port())))
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

        wait_for(events, timeout=30, message="an Event about search")

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
    tmp_path: Path, signum: signal.Signals
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
