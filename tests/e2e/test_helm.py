"""The Helm chart on the real control plane: `helm install`, `helm upgrade`, `helm uninstall`.

The local control plane has no nodes, so the operator's pods never start: the tests assert
on the objects the API server holds. The session's in-process operator (the `operator`
fixture) stands in for the Deployment while a tenant's Namespace resource is served, which
shows what uninstalling does to tenants: nothing. `helm uninstall` removes the release's
objects only, returns at once (no finalizer is involved), and leaves the CRDs (vectorschema's
and kopf's shared peering CRDs), every Namespace resource and every Qdrant collection.

helm is the pinned one (tools/helm/build.sh), built once into ~/.cache/vectorschema.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.e2e.operator_env import KubectlFn, apply, get, namespace_doc, reason_is, vns
from tests.helm import CHART, helm

pytestmark = pytest.mark.e2e

VECTOR = {"name": "v", "size": 4, "distance": "Cosine"}
CRDS = [
    "namespaces.vectorschema.dev",
    "plugins.vectorschema.dev",
    "clusterkopfpeerings.kopf.dev",
    "kopfpeerings.kopf.dev",
]


@pytest.fixture(scope="module")
def release(kubectl: KubectlFn, control_plane: Any) -> Iterator[dict[str, str]]:
    """A release name and its namespace; the namespace is deleted afterwards."""
    suffix = uuid.uuid4().hex[:6]
    names = {"name": f"vs-{suffix}", "namespace": f"vs-{suffix}-system"}
    yield names
    helm("uninstall", names["name"], "-n", names["namespace"], *kube(control_plane), check=False)
    kubectl("delete", "namespace", names["namespace"], "--wait=false", "--ignore-not-found")


def kube(control_plane: Any) -> list[str]:
    return ["--kubeconfig", str(control_plane.kubeconfig)]


def objects(kubectl: KubectlFn, kinds: str, *args: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(kubectl("get", kinds, *args, "-o", "json").stdout)[
        "items"
    ]
    return items


def the_container(deployment: dict[str, Any]) -> dict[str, Any]:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(c)


def test_install_upgrade_uninstall(
    control_plane: Any,
    kubectl: KubectlFn,
    operator: Any,
    qdrant: Any,
    namespace: str,
    wait_for: Any,
    release: dict[str, str],
    tmp_path: Path,
) -> None:
    name, ns = release["name"], release["namespace"]
    full = f"{name}-vectorschema"
    selector = f"app.kubernetes.io/instance={name}"

    # A tenant's Namespace resource, served (by the session's operator), whose collection
    # would be dropped if anything deleted the resource.
    apply(
        kubectl,
        namespace_doc(
            namespace, "kept", plugins=[{"name": "p", "vectors": [VECTOR]}], deletionPolicy="Delete"
        ),
    )
    wait_for(reason_is(kubectl, namespace, "kept", "Ready", "True", "Reconciled"), 60)
    collection = f"{namespace}_kept"
    assert qdrant.observe(collection) is not None

    # install: the tenant namespace is watched by name; an API-key Secret; two replicas.
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "qdrant": {
                    "url": "http://qdrant.example:6333",
                    "apiKeySecret": {"name": "qdrant-api-key", "key": "api-key"},
                },
                "watch": {"namespaces": [namespace]},
                "tenancy": {"allowedQdrantUrls": ["http://qdrant.example:6333"]},
            }
        )
    )
    out = helm(
        "install", name, str(CHART), "-n", ns, "--create-namespace", "-f", str(values),
        "--wait=false", *kube(control_plane),
    ).stdout  # fmt: skip
    assert "STATUS: deployed" in out, out
    for crd in CRDS:
        kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")

    (dep,) = objects(kubectl, "deployments", "-n", ns, "-l", selector)
    assert dep["metadata"]["name"] == full and dep["spec"]["replicas"] == 2
    c = the_container(dep)
    script = c["args"][0]
    assert f"--namespace='{namespace}'" in script and "--all-namespaces" not in script
    assert f"--peering={full} " in script
    env = {e["name"]: e for e in c["env"]}
    assert env["QDRANT_URL"]["value"] == "http://qdrant.example:6333"
    assert env["QDRANT_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "qdrant-api-key"
    assert env["VECTORSCHEMA_ALLOWED_QDRANT_URLS"]["value"] == "http://qdrant.example:6333"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    kubectl("get", "clusterkopfpeering", full)
    kubectl("get", "serviceaccount", full, "-n", ns)
    kubectl("get", "service", f"{full}-metrics", "-n", ns)
    kubectl("get", "poddisruptionbudget", full, "-n", ns)
    kubectl("get", "networkpolicy", full, "-n", ns)
    kubectl("get", "clusterrole", full)
    kubectl("get", "clusterrole", f"{full}-tenant")
    # The tenant role is bound in the watched namespace only.
    (binding,) = objects(kubectl, "rolebindings", "-n", namespace, "-l", selector)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": full, "namespace": ns}]
    assert kubectl("get", "clusterrolebinding", f"{full}-tenant", check=False).returncode != 0
    sa = f"system:serviceaccount:{ns}:{full}"
    for verb, resource, where in [
        ("patch", "namespaces.vectorschema.dev/status", namespace),
        ("list", "secrets", namespace),
        ("watch", "secrets", namespace),
    ]:
        res = kubectl("auth", "can-i", verb, resource, "-n", where, "--as", sa, check=False)
        assert res.stdout.strip() == "yes", (verb, resource, res.stdout, res.stderr)
    # Secrets: list/watch (label-selected by the operator) in the watched namespace only,
    # and never `get` (issue 8).
    for verb, where in [("list", "default"), ("get", namespace)]:
        other = kubectl("auth", "can-i", verb, "secrets", "-n", where, "--as", sa, check=False)
        assert other.stdout.strip() == "no", (verb, where)

    # upgrade: sharded in two, JSON logs, three replicas each; the values given at install
    # are kept (--reuse-values).
    out = helm(
        "upgrade", name, str(CHART), "-n", ns, "--reuse-values",
        "--set", "shards.count=2", "--set", "replicas=3", "--set", "logFormat=json",
        *kube(control_plane),
    ).stdout  # fmt: skip
    assert "STATUS: deployed" in out and "REVISION: 2" in out, out
    deps = objects(kubectl, "deployments", "-n", ns, "-l", selector)
    assert sorted(d["metadata"]["name"] for d in deps) == [f"{full}-shard-0", f"{full}-shard-1"]
    for index, dep in enumerate(sorted(deps, key=lambda d: d["metadata"]["name"])):
        assert dep["spec"]["replicas"] == 3
        script = the_container(dep)["args"][0]
        assert "--log-format=json" in script and f"--peering={full}-shard-{index} " in script
        assert f"--namespace='{namespace}'" in script
        env = {e["name"]: e.get("value") for e in the_container(dep)["env"]}
        assert env["VECTORSCHEMA_SHARD_INDEX"] == str(index)
        assert env["VECTORSCHEMA_SHARD_COUNT"] == "2"
    peerings = {
        p["metadata"]["name"] for p in objects(kubectl, "clusterkopfpeerings", "-l", selector)
    }
    assert peerings == {f"{full}-shard-0", f"{full}-shard-1"}  # the unsharded one is gone
    history = json.loads(helm("history", name, "-n", ns, "-o", "json", *kube(control_plane)).stdout)
    assert [h["revision"] for h in history] == [1, 2]

    # uninstall: quick, and only the release's objects go.
    started = time.monotonic()
    helm("uninstall", name, "-n", ns, "--wait", "--timeout", "60s", *kube(control_plane))
    assert time.monotonic() - started < 30
    for kinds, args in [
        ("deployments,services,poddisruptionbudgets,networkpolicies,serviceaccounts", ["-n", ns]),
        ("clusterroles,clusterrolebindings,clusterkopfpeerings", []),
        ("rolebindings", ["-n", namespace]),
    ]:
        assert objects(kubectl, kinds, *args, "-l", selector) == [], kinds
    for crd in CRDS:  # kept: shared (kopf.dev) or holding every tenant's resources
        kubectl("get", "crd", crd)
    obj = vns(kubectl, namespace, "kept")
    assert obj["metadata"].get("deletionTimestamp") is None
    assert obj["metadata"]["finalizers"] == ["vectorschema.dev/collection"]
    assert qdrant.observe(collection) is not None
    assert get(kubectl, "namespace", ns)["status"]["phase"] == "Active"


def test_lint_and_template_need_no_cluster() -> None:
    """`helm lint` and `helm template` read nothing from a cluster (GitOps renders offline)."""
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env["KUBECONFIG"] = "/nonexistent"
    helm("lint", "--strict", str(CHART), env=env)
    helm("template", "x", str(CHART), env=env)
