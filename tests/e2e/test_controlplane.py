"""Smoke tests: the local control plane is a real Kubernetes API (no mocks).

They use a test-only CRD (``widgets.smoke.vectorschema.dev``) defined here, unrelated to
the operator's own CRDs.
"""

from __future__ import annotations

import base64
import json
import subprocess
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from devenv import ControlPlane

pytestmark = pytest.mark.e2e

GROUP = "smoke.vectorschema.dev"
VERSION = "v1"
PLURAL = "widgets"
CRD_NAME = f"{PLURAL}.{GROUP}"

WIDGET_CRD = textwrap.dedent(
    f"""\
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata:
      name: {CRD_NAME}
    spec:
      group: {GROUP}
      scope: Namespaced
      names:
        plural: {PLURAL}
        singular: widget
        kind: Widget
        listKind: WidgetList
      versions:
        - name: {VERSION}
          served: true
          storage: true
          subresources:
            status: {{}}
          additionalPrinterColumns:
            - name: Size
              type: integer
              jsonPath: .spec.size
            - name: Color
              type: string
              jsonPath: .spec.color
            - name: Phase
              type: string
              jsonPath: .status.phase
          schema:
            openAPIV3Schema:
              type: object
              properties:
                spec:
                  type: object
                  required: [size]
                  properties:
                    size:
                      type: integer
                      minimum: 1
                      maximum: 10
                    color:
                      type: string
                      enum: [red, green, blue]
                status:
                  type: object
                  properties:
                    phase:
                      type: string
    """
)

Kubectl = Callable[..., subprocess.CompletedProcess[str]]
WaitFor = Callable[..., Any]


def widget(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Widget",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


@pytest.fixture(scope="module")
def widget_crd(kubectl: Kubectl) -> Iterator[str]:
    """The Widget CRD, applied with kubectl and Established."""
    kubectl("apply", "-f", "-", input=WIDGET_CRD)
    kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")
    yield CRD_NAME
    kubectl("delete", "crd", CRD_NAME, "--wait=false", "--ignore-not-found", check=False)


@pytest.fixture
def custom(k8s_api: Any, widget_crd: str) -> Any:
    return client.CustomObjectsApi(k8s_api)


def test_kubectl_reports_server_version(kubectl: Kubectl) -> None:
    out = json.loads(kubectl("version", "-o", "json").stdout)
    assert out["serverVersion"]["gitVersion"] == "v1.36.3"
    assert out["serverVersion"]["minor"] == "36"


def test_crd_becomes_established(k8s_api: Any, widget_crd: str) -> None:
    crd = client.ApiextensionsV1Api(k8s_api).read_custom_resource_definition(widget_crd)
    assert crd.status is not None
    conditions = {c.type: c.status for c in crd.status.conditions or []}
    assert conditions.get("NamesAccepted") == "True"
    assert conditions.get("Established") == "True"


def test_schema_violation_is_rejected_naming_the_field(
    kubectl: Kubectl, widget_crd: str, namespace: str
) -> None:
    bad = widget("too-big", namespace, size=99, color="red")
    result = kubectl("apply", "-f", "-", input=json.dumps(bad), check=False)
    assert result.returncode != 0
    assert "spec.size" in result.stderr
    assert "less than or equal to 10" in result.stderr

    bad = widget("purple", namespace, size=3, color="purple")
    result = kubectl("apply", "-f", "-", input=json.dumps(bad), check=False)
    assert result.returncode != 0
    assert "spec.color" in result.stderr

    assert "No resources found" in kubectl("get", PLURAL, "-n", namespace).stderr


def test_unknown_fields_are_pruned(custom: Any, kubectl: Kubectl, namespace: str) -> None:
    body = widget("pruned", namespace, size=2, color="green", shininess="very")
    body["extraTopLevel"] = {"x": 1}
    # Without strict field validation (the API default), unknown fields are dropped.
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    stored = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "pruned")
    assert stored["spec"] == {"size": 2, "color": "green"}
    assert "extraTopLevel" not in stored

    # kubectl asks for strict field validation and is refused, naming the field.
    strict = widget("strict", namespace, size=2, shininess="very")
    result = kubectl("apply", "-f", "-", input=json.dumps(strict), check=False)
    assert result.returncode != 0
    assert "shininess" in result.stderr


def test_status_write_does_not_change_spec(custom: Any, namespace: str) -> None:
    custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, widget("w", namespace, size=1)
    )
    patched = custom.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "w",
        {"spec": {"size": 7}, "status": {"phase": "Ready"}},
    )
    assert patched["status"] == {"phase": "Ready"}
    assert patched["spec"] == {"size": 1}
    stored = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w")
    assert stored["spec"] == {"size": 1}

    # ... and a write of the main resource does not change status.
    stored["spec"]["size"] = 4
    stored["status"] = {"phase": "Changed"}
    replaced = custom.replace_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "w", stored
    )
    assert replaced["spec"] == {"size": 4}
    assert replaced["status"] == {"phase": "Ready"}


def test_stale_resource_version_gets_409(custom: Any, namespace: str) -> None:
    custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, widget("w", namespace, size=1)
    )
    first = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w")
    fresh = dict(first, spec={"size": 2})
    updated = custom.replace_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w", fresh)
    assert updated["metadata"]["resourceVersion"] != first["metadata"]["resourceVersion"]

    stale = dict(first, spec={"size": 3})  # still carries the old resourceVersion
    with pytest.raises(ApiException) as err:
        custom.replace_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w", stale)
    assert err.value.status == 409
    assert "the object has been modified" in str(err.value.body)


def test_kubectl_get_shows_printer_columns(kubectl: Kubectl, custom: Any, namespace: str) -> None:
    kubectl("apply", "-f", "-", input=json.dumps(widget("gadget", namespace, size=5, color="blue")))
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "gadget", {"status": {"phase": "Ready"}}
    )
    lines = kubectl("get", PLURAL, "-n", namespace).stdout.splitlines()
    # Declared columns replace the default AGE column (it was not declared here).
    assert lines[0].split() == ["NAME", "SIZE", "COLOR", "PHASE"]
    assert lines[1].split()[:4] == ["gadget", "5", "blue", "Ready"]


def test_namespace_deletion_completes(
    kubectl: Kubectl, custom: Any, k8s_api: Any, wait_for: WaitFor
) -> None:
    ns = "e2e-doomed"
    kubectl("create", "namespace", ns)
    kubectl("create", "configmap", "cm", "-n", ns, "--from-literal=a=b")
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, widget("w", ns, size=1))
    kubectl("delete", "namespace", ns, "--wait=false")

    core = client.CoreV1Api(k8s_api)

    def gone() -> bool:
        try:
            core.read_namespace(ns)
        except ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return False

    wait_for(gone, timeout=60, message=f"namespace {ns} to be deleted by the namespace controller")


def test_garbage_collection_deletes_dependents(
    kubectl: Kubectl, k8s_api: Any, namespace: str, wait_for: WaitFor
) -> None:
    core = client.CoreV1Api(k8s_api)
    owner = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    assert owner.metadata is not None
    dependent = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "dependent",
            "namespace": namespace,
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "name": "owner",
                    "uid": owner.metadata.uid,
                }
            ],
        },
        "data": {"role": "dependent"},
    }
    kubectl("apply", "-f", "-", input=json.dumps(dependent))
    kubectl("delete", "configmap", "owner", "-n", namespace)

    def dependent_gone() -> bool:
        items = core.list_namespaced_config_map(namespace).items
        names = {cm.metadata.name for cm in items if cm.metadata is not None}
        return "dependent" not in names

    wait_for(dependent_gone, timeout=60, message="the garbage collector to delete 'dependent'")


# -- RBAC ---------------------------------------------------------------------------------


def _token_api(control_plane: ControlPlane, token: str) -> client.ApiClient:
    cfg = client.Configuration()
    cfg.host = control_plane.server
    cfg.ssl_ca_cert = str(control_plane.ca_file)
    cfg.api_key = {"BearerToken": token, "authorization": token}
    cfg.api_key_prefix = {"BearerToken": "Bearer", "authorization": "Bearer"}
    return client.ApiClient(cfg)


def _status_of(call: Callable[[], Any]) -> int:
    try:
        call()
    except ApiException as exc:
        return int(exc.status)
    return 200


READER_ROLE = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: configmap-reader, namespace: {ns}}}
rules:
  - apiGroups: [""]
    resources: [configmaps]
    verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: configmap-reader, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: configmap-reader}}
subjects:
  - {subject}
"""


def test_rbac_service_account_token(
    control_plane: ControlPlane, kubectl: Kubectl, namespace: str, wait_for: WaitFor
) -> None:
    kubectl("create", "serviceaccount", "reader", "-n", namespace)
    token = kubectl("create", "token", "reader", "-n", namespace).stdout.strip()
    with _token_api(control_plane, token) as api:
        core = client.CoreV1Api(api)

        def list_configmaps() -> int:
            return _status_of(lambda: core.list_namespaced_config_map(namespace))

        assert list_configmaps() == 403

        subject = f"{{kind: ServiceAccount, name: reader, namespace: {namespace}}}"
        kubectl("apply", "-f", "-", input=READER_ROLE.format(ns=namespace, subject=subject))
        wait_for(lambda: list_configmaps() == 200, timeout=30, message="RBAC to allow listing")

        # Still only what the Role grants.
        assert _status_of(lambda: core.list_namespaced_secret(namespace)) == 403
        created = _status_of(
            lambda: core.create_namespaced_config_map(
                namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="x"))
            )
        )
        assert created == 403


def test_service_account_token_secret_is_filled(
    control_plane: ControlPlane, kubectl: Kubectl, namespace: str, wait_for: WaitFor
) -> None:
    """The controller-manager's token controller fills legacy token Secrets."""
    kubectl("create", "serviceaccount", "legacy", "-n", namespace)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/service-account-token",
        "metadata": {
            "name": "legacy-token",
            "namespace": namespace,
            "annotations": {"kubernetes.io/service-account.name": "legacy"},
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(secret))

    def token() -> str | None:
        out = kubectl("get", "secret", "legacy-token", "-n", namespace, "-o", "json").stdout
        data = json.loads(out).get("data") or {}
        return base64.b64decode(data["token"]).decode() if "token" in data else None

    value: str = wait_for(token, timeout=30, message="the token controller to fill the Secret")
    with _token_api(control_plane, value) as api:
        core = client.CoreV1Api(api)
        assert _status_of(lambda: core.list_namespaced_config_map(namespace)) == 403


def test_rbac_client_certificate_user(
    control_plane: ControlPlane, kubectl: Kubectl, namespace: str, wait_for: WaitFor
) -> None:
    user_kubeconfig: Path = control_plane.user_kubeconfig("alice", ["smoke-readers"])

    def can_list() -> bool:
        result = kubectl(
            "get", "configmaps", "-n", namespace, check=False, kubeconfig=user_kubeconfig
        )
        if result.returncode != 0:
            assert "Forbidden" in result.stderr, result.stderr
        return result.returncode == 0

    assert not can_list()
    subject = "{kind: Group, name: smoke-readers, apiGroup: rbac.authorization.k8s.io}"
    kubectl("apply", "-f", "-", input=READER_ROLE.format(ns=namespace, subject=subject))
    wait_for(can_list, timeout=30, message="RBAC to allow the group to list")
