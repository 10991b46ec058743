"""The Helm chart (charts/vectorschema) and the kustomize base (manifests/), without a cluster.

- Every copy of a CRD is the generated one (`crds/`), and the kopf peering CRDs are the same
  in the chart and the base.
- `helm lint --strict` passes, with the default values and with every value set.
- `helm template` renders what each value promises (asserted on the objects).
- The chart with its defaults and the kustomize base run the same container the same way
  (command, environment, probes, hardening, RBAC rules).

helm is the pinned one (tools/helm/build.sh), built once into ~/.cache/vectorschema.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
from tests.helm import CHART, by_kind, helm, one, render, values_args

import crdcopies

REPO = Path(__file__).resolve().parents[2]
KUBECTL = Path(sys.executable).parent / "kubectl"

FULL_VALUES: dict[str, Any] = {
    "image": {"repository": "registry.example/vs", "tag": "1.2.3", "pullPolicy": "Always"},
    "replicas": 3,
    "qdrant": {
        "url": "https://qdrant.example:6333",
        "apiKeySecret": {"name": "qdrant", "key": "token"},
    },
    "watch": {
        "namespaces": ["tenant-a", "tenant-b"],
        "namespaceSelector": "vectorschema.dev/installation=gold",
        "labelSelector": "tier in (gold)",
        "objectLabelScope": True,
    },
    "tenancy": {
        "allowedQdrantUrls": ["https://qdrant.example:6333", "https://other.example"],
        "secretLabel": "example.com/qdrant=yes",
        "collectionNames": "Any",
    },
    "limits": {
        "maxApiKeyBytes": 1024,
        "maxNamespacesPerKubeNamespace": 10,
        "maxVectors": 8,
        "maxDimensions": 4096,
        "maxShardNumber": 6,
        "maxReplicationFactor": 3,
        "maxStepsPerPass": 16,
        "workersPerTenant": 4,
        "qdrantInFlightPerTenant": 2,
    },
    "networkPolicy": {
        "enabled": True,
        "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
        "webhookFrom": [{"ipBlock": {"cidr": "172.20.0.0/28"}}],
    },
    "shards": {"count": 2},
    "backfill": {"maxJobs": 50, "maxJobsPerNamespace": 5, "qdrantUrl": "http://qdrant.pods:6333"},
    "logFormat": "json",
    "logLevel": "DEBUG",
    "metrics": {
        "enabled": True,
        "port": 9090,
        "serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "prom"}},
    },
    "health": {"port": 9091},
    "resources": {
        "requests": {"cpu": "10m", "memory": "64Mi"},
        "limits": {"cpu": "2", "memory": "1Gi"},
    },
    "podDisruptionBudget": {"enabled": True, "maxUnavailable": 2},
    "podAntiAffinity": "hard",
    "nodeSelector": {"pool": "system"},
    "tolerations": [{"key": "system", "operator": "Exists"}],
    "priorityClassName": "system-cluster-critical",
    "serviceAccount": {"create": True, "name": "vs-sa", "annotations": {"a": "b"}},
    "podAnnotations": {"example.com/team": "search"},
    "extraEnv": [{"name": "VECTORSCHEMA_RESYNC_SECONDS", "value": "30"}],
    "webhook": {
        "enabled": True,
        "port": 8443,
        "timeoutSeconds": 3,
        "certificates": "cert-manager",
        "certManager": {"issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}},
    },
}


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def kustomize(path: Path) -> list[dict[str, Any]]:
    done = subprocess.run(
        [str(KUBECTL), "kustomize", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(c)


def script(deployment: dict[str, Any]) -> str:
    c = container(deployment)
    assert c["command"] == ["/bin/sh", "-c"] and len(c["args"]) == 1, c
    return str(c["args"][0])


def env(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container(deployment)["env"]}


def for_people(role: dict[str, Any]) -> bool:
    """One of the roles for people (view, edit, plugin-admin), not the operator's."""
    return bool(role["metadata"]["labels"].get("app.kubernetes.io/component") == "user-roles")


def rules(docs: list[dict[str, Any]], *, people: bool = False) -> list[tuple[str, ...]]:
    """Every (group, resource, resourceName, verb) the operator's ClusterRoles of ``docs``
    grant (with ``people``: the roles for people instead)."""
    found = set()
    for role in by_kind(docs, "ClusterRole"):
        if for_people(role) != people:
            continue
        for rule in role["rules"]:
            for g in rule["apiGroups"]:
                for r in rule["resources"]:
                    for n in rule.get("resourceNames", ["*"]):
                        for v in rule["verbs"]:
                            found.add((g, r, n, v))
    return sorted(found)


# --------------------------------------------------------------------------------------
# CRDs
# --------------------------------------------------------------------------------------


def test_every_crd_copy_is_current() -> None:
    """The chart's and the base's CRDs are the generated ones (`make crds` rewrites them)."""
    for path, text in crdcopies.copies().items():
        assert path.read_text() == text, f"{path} is stale: run `make crds`"
    generated = sorted(p.name for p in (REPO / "crds").glob("*.yaml"))
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == sorted(
        [*generated, "kopf.dev.yaml"]
    )
    assert sorted(p.name for p in (REPO / "manifests" / "crds").glob("*.yaml")) == sorted(
        [*generated, "kopf.dev.yaml", "kustomization.yaml"]
    )


def test_no_crd_is_ever_pruned_by_a_gitops_tool() -> None:
    """Pruning a CRD deletes every resource of its kind: each copy says "never"."""
    chart = [d for p in (CHART / "crds").iterdir() for d in yaml.safe_load_all(p.read_text()) if d]
    base = [d for d in kustomize(REPO / "manifests") if d["kind"] == "CustomResourceDefinition"]
    assert len(chart) == len(base) == 4
    for crd in [*chart, *base]:
        annotations = crd["metadata"].get("annotations", {})
        assert annotations.get("argocd.argoproj.io/sync-options") == "Prune=false", crd["metadata"]
        assert annotations.get("kustomize.toolkit.fluxcd.io/prune") == "disabled"


# --------------------------------------------------------------------------------------
# helm lint, defaults
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [{}, FULL_VALUES], ids=["defaults", "every-value"])
def test_helm_lint(values: dict[str, Any], tmp_path: Path) -> None:
    file = tmp_path / "values.yaml"
    file.write_text(yaml.safe_dump(values))
    out = helm("lint", "--strict", str(CHART), "-f", str(file)).stdout
    assert "1 chart(s) linted, 0 chart(s) failed" in out, out


def test_defaults_render_the_documented_objects() -> None:
    docs = render()
    assert sorted((d["kind"], d["metadata"]["name"]) for d in docs) == sorted(
        [
            ("ServiceAccount", "vectorschema"),
            ("ClusterRole", "vectorschema"),
            ("ClusterRole", "vectorschema-tenant"),
            ("ClusterRole", "vectorschema-view"),
            ("ClusterRole", "vectorschema-edit"),
            ("ClusterRole", "vectorschema-plugin-admin"),
            ("ClusterRoleBinding", "vectorschema"),
            ("ClusterRoleBinding", "vectorschema-tenant"),
            ("Deployment", "vectorschema"),
            ("Service", "vectorschema-metrics"),
            ("PodDisruptionBudget", "vectorschema"),
            ("ClusterKopfPeering", "vectorschema"),
            ("NetworkPolicy", "vectorschema"),
            ("Service", "vectorschema-webhook"),
            ("Secret", "vectorschema-webhook-cert"),
            ("ValidatingWebhookConfiguration", "vectorschema"),
            ("Role", "vectorschema-shard-layout"),
            ("RoleBinding", "vectorschema-shard-layout"),
        ]
    )
    cluster_scoped = (
        "ClusterRole",
        "ClusterRoleBinding",
        "ClusterKopfPeering",
        "ValidatingWebhookConfiguration",
    )
    for d in docs:
        if d["kind"] not in cluster_scoped:
            assert d["metadata"]["namespace"] == "vectorschema-system", d["metadata"]
    crds = [d for d in render(include_crds=True) if d["kind"] == "CustomResourceDefinition"]
    assert sorted(d["metadata"]["name"] for d in crds) == [
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
        "namespaces.vectorschema.dev",
        "plugins.vectorschema.dev",
    ]


def test_default_deployment_is_hardened_and_probed() -> None:
    dep = one(render(), "Deployment")
    pod = dep["spec"]["template"]["spec"]
    c = container(dep)
    assert dep["spec"]["replicas"] == 2
    assert c["image"] == "ghcr.io/example/vectorschema:0.1.0"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert set(c["resources"]) == {"requests", "limits"}
    assert set(c["resources"]["limits"]) == {"cpu", "memory"}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"health": 8081, "metrics": 8080, "webhook": 9443}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert "--liveness=http://0.0.0.0:8081/healthz" in script(dep)
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert (
        anti[0]["podAffinityTerm"]["labelSelector"]["matchLabels"]
        == (dep["spec"]["selector"]["matchLabels"])
    )


def test_default_command_environment_and_peering() -> None:
    docs = render()
    dep = one(docs, "Deployment")
    cmd = script(dep)
    assert cmd.startswith("exec kopf run -m vectorschema.k8s.handlers ")
    assert "--all-namespaces" in cmd and "--namespace" not in cmd
    assert "--peering=vectorschema " in cmd and "--standalone" not in cmd
    assert "--log-format=full" in cmd and "--verbose" not in cmd and "--quiet" not in cmd
    assert {k: v.get("value") for k, v in env(dep).items()} == {
        # The chart ships the ClusterKopfPeering: a Pod that starts first must not create it.
        "VECTORSCHEMA_ENSURE_PEERING": "false",
        "QDRANT_URL": "http://qdrant.qdrant.svc:6333",
        "VECTORSCHEMA_SECRET_LABEL": "vectorschema.dev/qdrant-credentials=true",
        "VECTORSCHEMA_COLLECTION_NAMES": "Prefixed",
        "VECTORSCHEMA_MAX_API_KEY_BYTES": "4096",
        "VECTORSCHEMA_MAX_NAMESPACES_PER_KUBE_NAMESPACE": "100",
        "VECTORSCHEMA_MAX_VECTORS": "64",
        "VECTORSCHEMA_MAX_DIMENSIONS": "65536",
        "VECTORSCHEMA_MAX_SHARD_NUMBER": "64",
        "VECTORSCHEMA_MAX_REPLICATION_FACTOR": "8",
        "VECTORSCHEMA_MAX_STEPS_PER_PASS": "64",
        "VECTORSCHEMA_WORKERS_PER_TENANT": "0",
        "VECTORSCHEMA_QDRANT_MAX_IN_FLIGHT_PER_TENANT": "0",
        "VECTORSCHEMA_BACKFILL_MAX_JOBS": "10",
        "VECTORSCHEMA_BACKFILL_MAX_JOBS_PER_NAMESPACE": "2",
        "VECTORSCHEMA_SHARD_INDEX": "0",
        "VECTORSCHEMA_SHARD_COUNT": "1",
        "VECTORSCHEMA_SHARD_LEASE_NAME": "vectorschema-shard-layout",
        "POD_NAMESPACE": None,
        "VECTORSCHEMA_METRICS_PORT": "8080",
        "VECTORSCHEMA_WEBHOOK_PORT": "9443",
        "VECTORSCHEMA_WEBHOOK_ADDR": "0.0.0.0",
        "VECTORSCHEMA_WEBHOOK_TIMEOUT_SECONDS": "5",
        "VECTORSCHEMA_WEBHOOK_CERT_DIR": "/etc/vectorschema/webhook",
        "VECTORSCHEMA_WEBHOOK_CONFIGURATION": "",
        "PYTHONUNBUFFERED": "1",
    }
    assert env(dep)["POD_NAMESPACE"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.namespace"}
    }
    one(docs, "ClusterKopfPeering", "vectorschema")
    peering_rules = [r for r in rules(docs) if r[1] == "clusterkopfpeerings"]
    assert ("kopf.dev", "clusterkopfpeerings", "vectorschema", "patch") in peering_rules
    assert ("kopf.dev", "clusterkopfpeerings", "*", "patch") not in peering_rules
    # The operator creates its peering object if it is missing.
    assert ("kopf.dev", "clusterkopfpeerings", "*", "create") in peering_rules
    svc = one(docs, "Service", "vectorschema-metrics")
    assert svc["spec"]["ports"] == [
        {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}
    ]
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    assert by_kind(docs, "ServiceMonitor") == []


# --------------------------------------------------------------------------------------
# every value
# --------------------------------------------------------------------------------------


def test_every_value_reaches_the_objects() -> None:
    docs = render(FULL_VALUES, release="vs", namespace="ops")
    deps = by_kind(docs, "Deployment")
    assert [d["metadata"]["name"] for d in deps] == [
        "vs-vectorschema-shard-0",
        "vs-vectorschema-shard-1",
    ]
    for index, dep in enumerate(deps):
        pod = dep["spec"]["template"]["spec"]
        c = container(dep)
        cmd = script(dep)
        assert dep["spec"]["replicas"] == 3
        assert c["image"] == "registry.example/vs:1.2.3" and c["imagePullPolicy"] == "Always"
        assert "--namespace='tenant-a' --namespace='tenant-b'" in cmd
        assert "--all-namespaces" not in cmd
        assert f"--peering=vs-vectorschema-shard-{index} " in cmd
        assert "--log-format=json" in cmd and cmd.endswith("--verbose")
        assert "--liveness=http://0.0.0.0:9091/healthz" in cmd
        e = env(dep)
        assert e["QDRANT_URL"]["value"] == "https://qdrant.example:6333"
        assert e["VECTORSCHEMA_BACKFILL_MAX_JOBS"]["value"] == "50"
        assert e["VECTORSCHEMA_BACKFILL_MAX_JOBS_PER_NAMESPACE"]["value"] == "5"
        assert e["VECTORSCHEMA_BACKFILL_QDRANT_URL"]["value"] == "http://qdrant.pods:6333"
        assert e["QDRANT_API_KEY"]["valueFrom"] == {
            "secretKeyRef": {"name": "qdrant", "key": "token"}
        }
        assert e["VECTORSCHEMA_ALLOWED_QDRANT_URLS"]["value"] == (
            "https://qdrant.example:6333,https://other.example"
        )
        assert e["VECTORSCHEMA_SECRET_LABEL"]["value"] == "example.com/qdrant=yes"
        assert e["VECTORSCHEMA_COLLECTION_NAMES"]["value"] == "Any"
        assert e["VECTORSCHEMA_LABEL_SELECTOR"]["value"] == "tier in (gold)"
        assert e["VECTORSCHEMA_OBJECT_LABEL_SCOPE"]["value"] == "true"
        assert e["VECTORSCHEMA_NAMESPACE_SELECTOR"]["value"] == "vectorschema.dev/installation=gold"
        assert e["VECTORSCHEMA_SHARD_INDEX"]["value"] == str(index)
        assert e["VECTORSCHEMA_SHARD_COUNT"]["value"] == "2"
        assert e["VECTORSCHEMA_METRICS_PORT"]["value"] == "9090"
        assert e["VECTORSCHEMA_RESYNC_SECONDS"]["value"] == "30"
        assert {
            k: v["value"]
            for k, v in e.items()
            if ("_MAX_" in k or "PER_TENANT" in k) and "BACKFILL" not in k
        } == {
            "VECTORSCHEMA_MAX_API_KEY_BYTES": "1024",
            "VECTORSCHEMA_MAX_NAMESPACES_PER_KUBE_NAMESPACE": "10",
            "VECTORSCHEMA_MAX_VECTORS": "8",
            "VECTORSCHEMA_MAX_DIMENSIONS": "4096",
            "VECTORSCHEMA_MAX_SHARD_NUMBER": "6",
            "VECTORSCHEMA_MAX_REPLICATION_FACTOR": "3",
            "VECTORSCHEMA_MAX_STEPS_PER_PASS": "16",
            "VECTORSCHEMA_WORKERS_PER_TENANT": "4",
            "VECTORSCHEMA_QDRANT_MAX_IN_FLIGHT_PER_TENANT": "2",
        }
        assert {p["name"]: p["containerPort"] for p in c["ports"]} == {
            "health": 9091,
            "metrics": 9090,
            "webhook": 8443,
        }
        assert e["VECTORSCHEMA_WEBHOOK_PORT"]["value"] == "8443"
        assert e["VECTORSCHEMA_WEBHOOK_TIMEOUT_SECONDS"]["value"] == "3"
        assert c["resources"] == FULL_VALUES["resources"]
        assert pod["serviceAccountName"] == "vs-sa"
        assert pod["nodeSelector"] == {"pool": "system"}
        assert pod["tolerations"] == FULL_VALUES["tolerations"]
        assert pod["priorityClassName"] == "system-cluster-critical"
        assert dep["spec"]["template"]["metadata"]["annotations"] == {"example.com/team": "search"}
        (term,) = pod["affinity"]["podAntiAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]
        assert term["labelSelector"]["matchLabels"]["vectorschema.dev/shard"] == str(index)
    assert [p["metadata"]["name"] for p in by_kind(docs, "ClusterKopfPeering")] == [
        "vs-vectorschema-shard-0",
        "vs-vectorschema-shard-1",
    ]
    assert [p["spec"]["maxUnavailable"] for p in by_kind(docs, "PodDisruptionBudget")] == [2, 2]
    sm = one(docs, "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "prom"
    assert sm["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s"}]
    assert one(docs, "ServiceAccount")["metadata"]["annotations"] == {"a": "b"}
    # The webhook: cert-manager with the given issuer; only the watched namespaces.
    cert = one(docs, "Certificate")
    assert cert["spec"]["issuerRef"] == {"name": "corp-ca", "kind": "ClusterIssuer"}
    assert cert["spec"]["secretName"] == "vs-vectorschema-webhook-cert"
    assert by_kind(docs, "Issuer") == [] and by_kind(docs, "Secret") == []
    # The webhook port admits only the API server's addresses the admin named.
    policy = one(docs, "NetworkPolicy")
    webhook_rule, metrics_rule = policy["spec"]["ingress"]
    assert webhook_rule["ports"] == [{"port": "webhook", "protocol": "TCP"}]
    assert webhook_rule["from"] == [{"ipBlock": {"cidr": "172.20.0.0/28"}}]
    assert metrics_rule["from"] == FULL_VALUES["networkPolicy"]["metricsFrom"]
    vwc = one(docs, "ValidatingWebhookConfiguration")
    assert vwc["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": "ops/vs-vectorschema-webhook"
    }
    (hook,) = vwc["webhooks"]
    assert hook["timeoutSeconds"] == 3 and "caBundle" not in hook["clientConfig"]
    assert hook["namespaceSelector"]["matchExpressions"] == [
        {
            "key": "kubernetes.io/metadata.name",
            "operator": "In",
            "values": ["tenant-a", "tenant-b"],
        },
        {"key": "vectorschema.dev/installation", "operator": "In", "values": ["gold"]},
    ]
    # Plain namespace names: the tenant role is bound in those namespaces only.
    bindings = [b for b in by_kind(docs, "RoleBinding") if b["roleRef"]["name"].endswith("-tenant")]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["tenant-a", "tenant-b"]
    assert {b["roleRef"]["name"] for b in bindings} == {"vs-vectorschema-tenant"}
    assert [b["metadata"]["name"] for b in by_kind(docs, "ClusterRoleBinding")] == [
        "vs-vectorschema"
    ]
    granted = rules(docs)
    assert ("", "namespaces", "*", "watch") in granted  # kopf matches namespace patterns
    for shard in (0, 1):
        assert (
            "kopf.dev",
            "clusterkopfpeerings",
            f"vs-vectorschema-shard-{shard}",
            "patch",
        ) in granted


def test_namespace_globs_bind_the_tenant_role_cluster_wide() -> None:
    docs = render({"watch": {"namespaces": ["tenant-*", "!tenant-test"], "labelSelector": ""}})
    assert [b["metadata"]["name"] for b in by_kind(docs, "RoleBinding")] == [
        "vectorschema-shard-layout"
    ]
    names = {b["metadata"]["name"] for b in by_kind(docs, "ClusterRoleBinding")}
    assert names == {"vectorschema", "vectorschema-tenant"}
    assert "--namespace='tenant-*' --namespace='!tenant-test'" in script(one(docs, "Deployment"))


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"logLevel": "WARNING"}, "--quiet"),
        ({"podAntiAffinity": "none"}, None),
        ({"qdrant": {"url": "", "apiKeySecret": {"name": "", "key": "k"}}}, "QDRANT_PATH"),
        (
            {"metrics": {"enabled": False, "port": 8080, "serviceMonitor": {"enabled": True}}},
            "no-metrics",
        ),
        ({"podDisruptionBudget": {"enabled": False}}, "no-pdb"),
        ({"serviceAccount": {"create": False, "name": "existing"}}, "no-sa"),
    ],
    ids=["quiet", "no-anti-affinity", "embedded", "metrics-off", "pdb-off", "existing-sa"],
)
def test_single_values(values: dict[str, Any], expected: str | None) -> None:
    docs = render(values)
    dep = one(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    if expected == "--quiet":
        assert script(dep).endswith("--quiet")
    elif expected is None:
        assert "affinity" not in pod
    elif expected == "QDRANT_PATH":
        assert env(dep)["QDRANT_PATH"]["value"] == "/tmp/qdrant" and "QDRANT_URL" not in env(dep)
    elif expected == "no-metrics":
        assert [d["metadata"]["name"] for d in by_kind(docs, "Service")] == ["vectorschema-webhook"]
        assert by_kind(docs, "ServiceMonitor") == []
        assert "VECTORSCHEMA_METRICS_PORT" not in env(dep)
        assert [p["name"] for p in container(dep)["ports"]] == ["health", "webhook"]
        # No metrics server, no /readyz: readiness falls back to kopf's endpoint.
        assert container(dep)["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    elif expected == "no-pdb":
        assert by_kind(docs, "PodDisruptionBudget") == []
    elif expected == "no-sa":
        assert by_kind(docs, "ServiceAccount") == []
        assert pod["serviceAccountName"] == "existing"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"logFormat": "xml"}, "logFormat must be plain, full or json"),
        ({"logLevel": "TRACE"}, "logLevel must be DEBUG, INFO or WARNING"),
        (
            {"tenancy": {"collectionNames": "Free"}},
            "tenancy.collectionNames must be Prefixed or Any",
        ),
        ({"shards": {"count": 0}}, "shards.count must be 1 or more"),
        ({"podAntiAffinity": "always"}, "podAntiAffinity must be soft, hard or none"),
        ({"serviceAccount": {"create": False, "name": ""}}, "serviceAccount.name is required"),
        (
            {"webhook": {"enabled": True, "certificates": "self"}},
            "webhook.certificates must be auto, cert-manager or helm",
        ),
        (
            {"watch": {"namespaces": [], "labelSelector": "team=a"}},
            "use watch.namespaceSelector, or opt in with watch.objectLabelScope: true",
        ),
    ],
)
def test_invalid_values_fail_with_a_message(values: dict[str, Any], message: str) -> None:
    done = helm("template", "x", str(CHART), *values_args(values), check=False)
    assert done.returncode != 0 and message in done.stderr, done.stderr


# --------------------------------------------------------------------------------------
# the chart and the kustomize base agree
# --------------------------------------------------------------------------------------


def test_chart_defaults_and_kustomize_base_run_the_same_operator() -> None:
    chart = one(render(), "Deployment")
    base_docs = kustomize(REPO / "manifests")
    base = one(base_docs, "Deployment")
    c_chart, c_base = container(chart), container(base)
    assert script(chart) == script(base)
    for key in ("securityContext", "resources", "livenessProbe", "readinessProbe", "ports"):
        assert c_chart[key] == c_base[key], key
    mounts = [m for m in c_chart["volumeMounts"] if m["name"] != "webhook-cert"]
    assert mounts == c_base["volumeMounts"]
    chart_env = {k: v.get("value") for k, v in env(chart).items()}
    base_env = {k: v.get("value") for k, v in env(base).items()}
    # The base reads the API key from an optional Secret; the chart only when one is named.
    assert base_env.pop("QDRANT_API_KEY") is None
    # The webhook's certificate: the chart mounts one (cert-manager's, or made at install
    # time) and installs the webhook configuration itself; kustomize cannot make one, so
    # the base's operator makes it (its replicas share it through a Secret) and registers.
    assert chart_env.pop("VECTORSCHEMA_WEBHOOK_CERT_DIR") == "/etc/vectorschema/webhook"
    assert chart_env.pop("VECTORSCHEMA_WEBHOOK_CONFIGURATION") == ""
    # The chart ships the ClusterKopfPeering and so does not let the operator create it (a
    # Pod that started before Helm created it would make the install fail); the base ships
    # none, and the operator creates it.
    assert chart_env.pop("VECTORSCHEMA_ENSURE_PEERING") == "false"
    assert "VECTORSCHEMA_ENSURE_PEERING" not in base_env
    assert base_env.pop("VECTORSCHEMA_WEBHOOK_CERT_DIR") == "/tmp/webhook"
    assert (
        base_env.pop("VECTORSCHEMA_WEBHOOK_SERVICE") == "vectorschema-system/vectorschema-webhook"
    )
    assert base_env.pop("VECTORSCHEMA_WEBHOOK_CERT_SECRET") == "vectorschema-webhook-cert"
    assert chart_env == base_env
    pod_chart, pod_base = chart["spec"]["template"]["spec"], base["spec"]["template"]["spec"]
    for key in ("securityContext", "terminationGracePeriodSeconds"):
        assert pod_chart[key] == pod_base[key], key
    assert [v for v in pod_chart["volumes"] if v["name"] != "webhook-cert"] == pod_base["volumes"]
    assert chart["spec"]["replicas"] == base["spec"]["replicas"]
    registration = {
        (
            "admissionregistration.k8s.io",
            "validatingwebhookconfigurations",
            "vectorschema.dev",
            "get",
        ),
        (
            "admissionregistration.k8s.io",
            "validatingwebhookconfigurations",
            "vectorschema.dev",
            "update",
        ),
    }
    base_rules = rules(base_docs)
    assert registration <= set(base_rules)
    assert rules(render()) == [r for r in base_rules if r not in registration]


# --------------------------------------------------------------------------------------
# the admission webhook
# --------------------------------------------------------------------------------------


def test_webhook_certificates_are_made_at_install_time_without_cert_manager() -> None:
    """No cert-manager API: a CA and a certificate for the Service, made by helm; the
    configuration trusts that CA; the operator mounts the Secret and registers nothing."""
    from cryptography import x509

    docs = render()
    secret = one(docs, "Secret", "vectorschema-webhook-cert")
    pem = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    leaf = x509.load_pem_x509_certificate(pem["tls.crt"])
    ca = x509.load_pem_x509_certificate(pem["ca.crt"])
    leaf.verify_directly_issued_by(ca)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "vectorschema-webhook.vectorschema-system.svc" in sans.get_values_for_type(x509.DNSName)
    (hook,) = one(docs, "ValidatingWebhookConfiguration")["webhooks"]
    assert base64.b64decode(hook["clientConfig"]["caBundle"]) == pem["ca.crt"]
    assert by_kind(docs, "Certificate") == []
    dep = one(docs, "Deployment")
    assert {"name": "webhook-cert", "secret": {"secretName": "vectorschema-webhook-cert"}} in (
        dep["spec"]["template"]["spec"]["volumes"]
    )


def test_webhook_uses_cert_manager_when_its_api_is_there() -> None:
    out = helm(
        "template",
        "vectorschema",
        str(CHART),
        "--namespace",
        "vectorschema-system",
        "--api-versions",
        "cert-manager.io/v1",
    ).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    assert by_kind(docs, "Secret") == []
    cert = one(docs, "Certificate")
    assert cert["spec"]["issuerRef"] == {
        "name": "vectorschema-webhook-selfsigned",
        "kind": "Issuer",
    }
    one(docs, "Issuer", "vectorschema-webhook-selfsigned")
    vwc = one(docs, "ValidatingWebhookConfiguration")
    assert vwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        "vectorschema-system/vectorschema-webhook"
    )


def test_the_charts_webhook_is_the_one_the_operator_registers() -> None:
    """Same rules, failure policy, side effects, timeout and path as the configuration the
    operator registers itself outside a cluster (k8s.admission.webhook_configuration)."""
    from vectorschema.k8s.admission import client_config, webhook_configuration
    from vectorschema.k8s.settings import WebhookSettings

    ws = WebhookSettings.from_env(
        {
            "VECTORSCHEMA_WEBHOOK_PORT": "9443",
            "VECTORSCHEMA_WEBHOOK_SERVICE": "vectorschema-system/vectorschema-webhook",
        }
    )
    (ours,) = webhook_configuration("x", client_config(ws, b"ca"), 5)["webhooks"]
    (chart,) = one(render(), "ValidatingWebhookConfiguration")["webhooks"]
    for key in (
        "name",
        "rules",
        "failurePolicy",
        "sideEffects",
        "timeoutSeconds",
        "matchPolicy",
        "admissionReviewVersions",
    ):
        assert chart[key] == ours[key], key
    ours_service = dict(ours["clientConfig"]["service"])
    assert chart["clientConfig"]["service"] == ours_service


def test_no_webhook_when_disabled() -> None:
    docs = render({"webhook": {"enabled": False}})
    assert by_kind(docs, "ValidatingWebhookConfiguration") == []
    assert [d["metadata"]["name"] for d in by_kind(docs, "Service")] == ["vectorschema-metrics"]
    dep = one(docs, "Deployment")
    assert not [k for k in env(dep) if k.startswith("VECTORSCHEMA_WEBHOOK")]
    assert [p["name"] for p in container(dep)["ports"]] == ["health", "metrics"]


def lease_rules(docs: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(namespace, resourceName or *, verb) the Roles grant on coordination.k8s.io leases."""
    found = set()
    for role in by_kind(docs, "Role"):
        for rule in role["rules"]:
            if rule["apiGroups"] == ["coordination.k8s.io"] and rule["resources"] == ["leases"]:
                for n in rule.get("resourceNames", ["*"]):
                    for v in rule["verbs"]:
                        found.add((role["metadata"]["namespace"], n, v))
    return found


@pytest.mark.parametrize("count", [1, 3])
def test_every_shard_holds_the_layout_lease(count: int) -> None:
    """Every replica, sharded or not, renews the shard layout lease of its release
    (issue 12): its name and namespace reach every Deployment, and RBAC lets it."""
    docs = render({"shards": {"count": count}}, release="vs", namespace="ops")
    deployments = by_kind(docs, "Deployment")
    assert len(deployments) == count
    for index, dep in enumerate(sorted(deployments, key=lambda d: d["metadata"]["name"])):
        e = env(dep)
        assert e["VECTORSCHEMA_SHARD_INDEX"]["value"] == str(index)
        assert e["VECTORSCHEMA_SHARD_COUNT"]["value"] == str(count)
        assert e["VECTORSCHEMA_SHARD_LEASE_NAME"]["value"] == "vs-vectorschema-shard-layout"
        assert "POD_NAMESPACE" in e
    assert lease_rules(docs) == {
        ("ops", "*", "create"),
        ("ops", "vs-vectorschema-shard-layout", "get"),
        ("ops", "vs-vectorschema-shard-layout", "update"),
    }
    binding = one(docs, "RoleBinding", "vs-vectorschema-shard-layout")
    assert binding["roleRef"]["name"] == "vs-vectorschema-shard-layout"


def test_kustomize_base_holds_the_layout_lease_too() -> None:
    docs = kustomize(REPO / "manifests")
    e = env(one(docs, "Deployment"))
    assert e["VECTORSCHEMA_SHARD_COUNT"]["value"] == "1"
    name = e["VECTORSCHEMA_SHARD_LEASE_NAME"]["value"]
    assert lease_rules(docs) == {
        ("vectorschema-system", "*", "create"),
        ("vectorschema-system", name, "get"),
        ("vectorschema-system", name, "update"),
    }


def test_webhook_client_ca_turns_on_caller_authentication() -> None:
    """Off by default; with `webhook.clientCA.configMap` the CA is mounted and named in
    VECTORSCHEMA_WEBHOOK_CLIENT_CA (the operator then requires the API server's cert)."""
    assert "VECTORSCHEMA_WEBHOOK_CLIENT_CA" not in env(one(render(), "Deployment"))
    docs = render({"webhook": {"clientCA": {"configMap": "apiserver-webhook-ca"}}})
    dep = one(docs, "Deployment")
    assert env(dep)["VECTORSCHEMA_WEBHOOK_CLIENT_CA"]["value"] == (
        "/etc/vectorschema/webhook-client-ca/ca.crt"
    )
    mounts = {m["name"]: m for m in container(dep)["volumeMounts"]}
    assert mounts["webhook-client-ca"]["mountPath"] == "/etc/vectorschema/webhook-client-ca"
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes["webhook-client-ca"]["configMap"] == {"name": "apiserver-webhook-ca"}


# --------------------------------------------------------------------------------------
# roles for people (issue 17, item 2)
# --------------------------------------------------------------------------------------

AGGREGATE = "rbac.authorization.k8s.io/aggregate-to-"


def people_roles(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The roles for people by suffix (view, edit, plugin-admin)."""
    return {
        r["metadata"]["name"].rsplit("vectorschema-", 1)[1]: r
        for r in by_kind(docs, "ClusterRole")
        if for_people(r)
    }


def aggregated_into(role: dict[str, Any]) -> set[str]:
    return {
        k.removeprefix(AGGREGATE)
        for k, v in role["metadata"]["labels"].items()
        if k.startswith(AGGREGATE) and v == "true"
    }


def test_roles_for_people_in_the_chart_and_the_base() -> None:
    chart, base = render(), kustomize(REPO / "manifests")
    for docs in (chart, base):
        roles = people_roles(docs)
        assert sorted(roles) == ["edit", "plugin-admin", "view"]
        assert aggregated_into(roles["view"]) == {"view", "edit", "admin"}
        assert aggregated_into(roles["edit"]) == {"edit", "admin"}
        assert aggregated_into(roles["plugin-admin"]) == set()
        granted = rules(docs, people=True)
        writes = {"create", "update", "patch", "delete", "deletecollection"}
        # No role for people writes status; only plugin-admin writes Plugins.
        assert not [g for g in granted if g[1].endswith("/status") and g[3] in writes]
        edit = rules([roles["edit"]], people=True)
        assert ("vectorschema.dev", "namespaces", "*", "create") in edit
        assert not [g for g in edit if g[1] != "namespaces"], edit
        view = rules([roles["view"]], people=True)
        assert {g[3] for g in view} == {"get", "list", "watch"}
        plugin_admin = rules([roles["plugin-admin"]], people=True)
        assert ("vectorschema.dev", "plugins", "*", "create") in plugin_admin
    assert rules(chart, people=True) == rules(base, people=True)
    assert by_kind(render({"userRoles": {"enabled": False}}), "ClusterRole") == [
        r for r in by_kind(chart, "ClusterRole") if not for_people(r)
    ]


def _matches(expressions: list[dict[str, Any]], labels: dict[str, str]) -> bool:
    """A LabelSelector's matchExpressions, as the API server evaluates them."""
    for e in expressions:
        key, op, values = e["key"], e["operator"], e.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


@pytest.mark.parametrize(
    "selector",
    [
        "vectorschema.dev/installation=gold",
        "tier in (gold, silver),!legacy",
        "env!=dev,team",
        "a==b,x notin (y,z)",
    ],
)
def test_the_webhook_judges_only_the_namespaces_of_watch_namespace_selector(selector: str) -> None:
    """Review 17, F7: the chart's webhook is called only for the Kubernetes namespaces
    whose labels match watch.namespaceSelector, exactly as the operator's scope reads it
    (`core.scope`), so another installation's tenants are not judged by this one."""
    from vectorschema.core.scope import LabelSelector

    docs = render({"webhook": {"enabled": True}, "watch": {"namespaceSelector": selector}})
    (hook,) = one(docs, "ValidatingWebhookConfiguration")["webhooks"]
    expressions = hook["namespaceSelector"]["matchExpressions"]
    scope = LabelSelector.parse(selector)
    samples = [
        {},
        {"vectorschema.dev/installation": "gold"},
        {"vectorschema.dev/installation": "silver"},
        {"tier": "gold"},
        {"tier": "silver", "legacy": "1"},
        {"tier": "bronze"},
        {"env": "dev", "team": "x"},
        {"env": "prod", "team": "x"},
        {"team": "x"},
        {"a": "b"},
        {"a": "b", "x": "y"},
        {"a": "c"},
    ]
    assert [_matches(expressions, s) for s in samples] == [scope.matches(s) for s in samples]
    assert any(scope.matches(s) for s in samples) and not all(scope.matches(s) for s in samples)


def test_an_opt_in_resource_quota_in_each_tenant_namespace() -> None:
    """Review 17, F1/F4: the admin can cap, per tenant, the Secrets (labelled ones are
    listed by the operator) and the Namespace resources; none by default."""
    assert by_kind(render(), "ResourceQuota") == []
    docs = render({"tenantQuota": {"namespaces": ["tenant-a", "tenant-b"]}})
    quotas = by_kind(docs, "ResourceQuota")
    assert [q["metadata"]["namespace"] for q in quotas] == ["tenant-a", "tenant-b"]
    assert quotas[0]["spec"]["hard"] == {
        "count/secrets": "100",
        "count/namespaces.vectorschema.dev": "100",
    }
