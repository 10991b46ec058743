"""Kubernetes API calls the operator and the CLI make besides kopf's own.

kopf watches and posts Events; the writes whose timing matters to us go through here:
the status (written once per reconcile, and the intent record before a destructive
step), removal of the one-shot approval annotation, reading an API-key Secret. All
resources are addressed fully qualified (group, version, plural), never by a bare kind:
our `Namespace` kind would otherwise collide with core `v1/Namespace`.

`Namespaces` is the controller's `NamespaceStore` over these calls. Every call has a
timeout and is retried on transient failures (`retries`): it raises `KubeUnavailable` when
the API server keeps failing, never hangs.
"""

from __future__ import annotations

import base64
import copy
import functools
import json
import os
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from vectorschema.api import (
    BACKFILL_OWNER_UID_LABEL,
    GROUP,
    NAMESPACE_PLURAL,
    PLUGIN_PLURAL,
    VERSION,
)
from vectorschema.controller.backfill import JobExists, JobRejected
from vectorschema.controller.status_writer import Conflict, NotFound
from vectorschema.k8s.retries import KubeUnavailable, retried, with_timeout

if TYPE_CHECKING:
    from vectorschema.controller.backfill import JobStore
    from vectorschema.controller.status_writer import NamespaceStore

__all__ = [
    "Conflict",
    "Jobs",
    "KubeUnavailable",
    "LiveNamespaces",
    "Namespaces",
    "NotFound",
    "SecretMissing",
    "api_client",
    "apply_validating_webhook",
    "ensure_peering",
    "get_namespace",
    "list_plugin_specs",
    "load_config",
    "patch_namespace_status",
    "patch_plugin_status",
    "read_labelled_secret",
    "read_or_create_secret",
    "secret_exists",
    "secret_value",
    "set_annotation",
]


def load_config(threads: int | None = None) -> None:
    """In-cluster credentials when running in a Pod, else the current kubeconfig.

    `threads`: how many threads may call the API at once; the shared client keeps that
    many connections alive (by default the client's own, 5 per CPU)."""
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        # Read KUBECONFIG now: the client's default is frozen at its import time.
        kubernetes.config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
    global _shared, _threads
    with _shared_lock:
        _shared = None  # the next call builds a client with the configuration just loaded
        _threads = threads


_shared: Any = None
_threads: int | None = None
_shared_lock = threading.Lock()


def api_client() -> Any:
    """The one `ApiClient` of this process: one urllib3 pool whose TLS connections are
    kept alive and reused by every thread. (A client per call paid a TLS handshake with a
    client certificate per request: the top of the operator's profile.) The pool keeps as
    many connections as threads may call at once (`load_config`): urllib3 opens one more
    for a caller that finds none free and closes it when it comes back to a full pool, so
    a pool smaller than the threads paid a handshake per request beyond its size (at
    10,000 Namespaces, 64 worker threads on the default 10: about a tenth of the
    operator's samples were in connect and handshake)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            configuration = kubernetes.client.Configuration.get_default_copy()
            if _threads is not None:
                configuration.connection_pool_maxsize = max(
                    _threads, configuration.connection_pool_maxsize
                )
            _shared = kubernetes.client.ApiClient(configuration)
        return _shared


def _custom() -> Any:
    return kubernetes.client.CustomObjectsApi(api_client())


def _api(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """One API call with its timeout, retried on transient failures."""
    call = functools.partial(fn, *args, **with_timeout(kwargs))
    functools.update_wrapper(call, fn)
    return retried(call)()


def ensure_peering(name: str) -> str:
    """Create the ClusterKopfPeering `name` unless it exists: kopf never creates it, and a
    replica with a mandatory `--peering` stays paused until it exists. Shipping it in the
    manifests would need its CRD established before the same apply maps it; created here,
    one `kubectl apply` installs everything. Returns what happened (created, exists, or
    no-crd when kopf's peering CRDs are not installed: kopf then says so itself)."""
    body = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}}
    try:
        _api(_custom().create_cluster_custom_object, "kopf.dev", "v1", "clusterkopfpeerings", body)
    except ApiException as exc:
        if exc.status == 409:
            return "exists"
        if exc.status == 404:
            return "no-crd"
        raise
    return "created"


def get_namespace(namespace: str, name: str) -> dict[str, Any]:
    try:
        body: dict[str, Any] = _api(
            _custom().get_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            NAMESPACE_PLURAL,
            name,
        )
    except ApiException as exc:
        if exc.status == 404:
            raise NotFound(f"Namespace {namespace}/{name} not found") from None
        raise
    return body


def namespace_uid(namespace: str, name: str) -> str | None:
    """The live Namespace resource's metadata.uid; None when it does not exist."""
    try:
        body = get_namespace(namespace, name)
    except NotFound:
        return None
    uid = (body.get("metadata") or {}).get("uid")
    return str(uid) if uid else ""


def patch_namespace_status(
    namespace: str, name: str, status: dict[str, Any], resource_version: str | None
) -> str:
    """Merge-patch `status` (a None value removes a field); returns the new resourceVersion.

    With `resource_version`, the write only lands on that exact version of the object, so
    a pass that worked from a stale copy cannot overwrite a newer status.
    """
    body: dict[str, Any] = {"status": status}
    if resource_version is not None:
        body["metadata"] = {"resourceVersion": resource_version}
    try:
        obj = _api(
            _custom().patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            NAMESPACE_PLURAL,
            name,
            body,
        )
    except ApiException as exc:
        if exc.status == 409:
            raise Conflict(f"{namespace}/{name} changed since it was read") from None
        raise
    version: str = obj["metadata"]["resourceVersion"]
    return version


def patch_plugin_status(name: str, status: dict[str, Any]) -> None:
    _api(
        _custom().patch_cluster_custom_object_status,
        GROUP,
        VERSION,
        PLUGIN_PLURAL,
        name,
        {"status": status},
    )


def list_plugin_specs() -> dict[str, list[dict[str, Any]]]:
    """Every Plugin's spec, by name (in the shape of kopf's index: a list per name)."""
    listed = _api(_custom().list_cluster_custom_object, GROUP, VERSION, PLUGIN_PLURAL)
    return {
        item["metadata"]["name"]: [dict(item.get("spec") or {})] for item in listed.get("items", [])
    }


def set_annotation(
    namespace: str,
    name: str,
    key: str,
    value: str | None,
    resource_version: str | None = None,
) -> str:
    """Set (or, with None, remove) one annotation of a Namespace resource; with
    `resource_version`, only onto that version (else Conflict). Returns the new version."""
    metadata: dict[str, Any] = {"annotations": {key: value}}
    if resource_version is not None:
        metadata["resourceVersion"] = resource_version
    try:
        obj = _api(
            _custom().patch_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            NAMESPACE_PLURAL,
            name,
            {"metadata": metadata},
        )
    except ApiException as exc:
        if exc.status == 409:
            raise Conflict(f"{namespace}/{name} changed since it was read") from None
        if exc.status == 404:
            raise NotFound(f"Namespace {namespace}/{name} not found") from None
        raise
    version: str = obj["metadata"]["resourceVersion"]
    return version


class Namespaces:
    """The Namespace resources, as the controller's `NamespaceStore`."""

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        return get_namespace(namespace, name)

    def patch_status(
        self, namespace: str, name: str, patch: dict[str, Any], resource_version: str | None
    ) -> str:
        return patch_namespace_status(namespace, name, patch, resource_version)

    def set_annotation(
        self,
        namespace: str,
        name: str,
        key: str,
        value: str | None,
        resource_version: str | None = None,
    ) -> str:
        return set_annotation(namespace, name, key, value, resource_version)


class LiveNamespaces(Namespaces):
    """`Namespaces` reading the object from kopf's live view of the watch stream (a
    daemon's `body`, replaced by kopf on every event) instead of a GET per pass.

    A pass may then start from a copy a few milliseconds older than the API server's;
    every write it makes is guarded by that copy's resourceVersion (`StatusWriter`), so a
    stale copy costs a 409 and a re-read. A re-read after a conflict is the live copy again
    when kopf has received a newer version since (a version this instance has not handed
    out; kopf's copy only moves forward), else a GET. Saves one API request per Namespace
    per pass (the idle resyncs, each reaction to a change), and the GET of most first
    passes: kopf adds its finalizer while the first pass works, so that pass's status write
    meets a 409, and by then the finalizer's event has usually arrived.

    `replaced` (kept per resource across passes, by the caller) holds the versions this
    operator's own writes replaced: a live copy still at one of them is older than what
    the last pass wrote (the watch has not delivered that write yet, e.g. when a Job event
    wakes the loop right after the pass), so it is read fresh instead. Planning from it
    would report the last pass's change as if it had not happened, and the final write
    (re-applied after the conflict) would overwrite that pass's report.
    """

    #: How many replaced versions are remembered per resource.
    KEPT = 8

    def __init__(self, body: Mapping[str, Any], replaced: list[str] | None = None) -> None:
        self._body = body
        self._replaced = replaced if replaced is not None else []
        self._handed: set[str] = set()  # the versions this instance's reads returned

    #: Reads one instance takes from kopf's copy (the pass's start, one re-read): later
    #: re-reads are GETs, so that a busy object cannot use up a write's attempts.
    LIVE_READS = 2

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        version = self._body.get("metadata", {}).get("resourceVersion")
        if len(self._handed) >= self.LIVE_READS:
            version = None
        if version and version not in self._replaced and version not in self._handed:
            snapshot: dict[str, Any] = copy.deepcopy(dict(self._body))
            version = snapshot.get("metadata", {}).get("resourceVersion")
            if version and version not in self._replaced and version not in self._handed:
                self._handed.add(version)
                return snapshot
        return get_namespace(namespace, name)

    def _remember(self, version: str | None) -> None:
        if version is not None:
            self._replaced.append(version)
            del self._replaced[: -self.KEPT]

    def patch_status(
        self, namespace: str, name: str, patch: dict[str, Any], resource_version: str | None
    ) -> str:
        new = super().patch_status(namespace, name, patch, resource_version)
        self._remember(resource_version)
        return new

    def set_annotation(
        self,
        namespace: str,
        name: str,
        key: str,
        value: str | None,
        resource_version: str | None = None,
    ) -> str:
        new = super().set_annotation(namespace, name, key, value, resource_version)
        self._remember(resource_version)
        return new


if TYPE_CHECKING:

    def _conforms(store: Namespaces) -> NamespaceStore:
        return store


class SecretMissing(LookupError):
    """The Secret or its key is not there. The message never carries the value."""


#: Ask the API server for metadata only: no Secret value is ever transferred.
_METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"


def secret_exists(namespace: str, name: str) -> bool:
    """Whether the Secret exists, asked for its metadata only (a `list` with a field
    selector: the operator's RBAC has no `get` on Secrets, and no value is transferred)."""
    response: Any = _api(
        kubernetes.client.CoreV1Api(api_client()).list_namespaced_secret,
        namespace,
        field_selector=f"metadata.name={name}",
        _headers={"Accept": _METADATA_ONLY},
        _preload_content=False,
    )
    found: dict[str, Any] = json.loads(response.data)
    return bool(found.get("items"))


def read_labelled_secret(namespace: str, name: str, selector: str) -> dict[str, Any] | None:
    """The Secret's labels and data if it carries the admin's label (`selector`), else
    None: a list selected by label and name (the operator's RBAC has list, not get, on
    Secrets; an unlabelled Secret's value is never transferred). The caller keeps only
    the one key it needs."""
    found = _api(
        kubernetes.client.CoreV1Api(api_client()).list_namespaced_secret,
        namespace,
        field_selector=f"metadata.name={name}",
        label_selector=selector,
    )
    for item in found.items or ():
        return {"labels": dict(item.metadata.labels or {}), "data": dict(item.data or {})}
    return None


def secret_value(data: Mapping[str, str] | None, key: str) -> bytes | None:
    """The decoded value of `key` in a Secret's `data` (base64), None if absent."""
    raw = (data or {}).get(key)
    if raw is None:
        return None
    try:
        return base64.b64decode(raw, validate=True)
    except ValueError:
        return None


def apply_validating_webhook(body: dict[str, Any]) -> None:
    """Replace the ValidatingWebhookConfiguration of that name, or create it if there is
    none (read first: in a cluster the operator may update its own configuration but
    not create one)."""
    api: Any = kubernetes.client.AdmissionregistrationV1Api(api_client())  # takes dict bodies too
    name = body["metadata"]["name"]
    try:
        current = _api(api.read_validating_webhook_configuration, name)
    except ApiException as exc:
        if exc.status != 404:
            raise
        _api(api.create_validating_webhook_configuration, body)
        return
    meta = {**body["metadata"], "resourceVersion": current.metadata.resource_version}
    _api(api.replace_validating_webhook_configuration, name, {**body, "metadata": meta})


def read_or_create_secret(
    namespace: str, name: str, make: Callable[[], dict[str, bytes]]
) -> dict[str, bytes]:
    """The Secret's data; if it does not exist, create it with `make()` first (when two
    processes race, the one that loses reads the winner's)."""
    core: Any = kubernetes.client.CoreV1Api(api_client())  # takes dict bodies too
    for _ in range(2):
        try:
            secret = _api(core.read_namespaced_secret, name, namespace)
            return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}
        except ApiException as exc:
            if exc.status != 404:
                raise
        data = make()
        body = {
            "metadata": {"name": name, "namespace": namespace},
            "type": "kubernetes.io/tls",
            "data": {k: base64.b64encode(v).decode("ascii") for k, v in data.items()},
        }
        try:
            _api(core.create_namespaced_secret, namespace, body)
            return data
        except ApiException as exc:
            if exc.status != 409:
                raise
    raise RuntimeError(f"Secret {namespace}/{name} could be neither read nor created")


# --- backfill Jobs (issue 18) ------------------------------------------------------------


class Jobs:
    """The backfill Jobs, as the controller's `JobStore`."""

    def _batch(self) -> Any:
        return kubernetes.client.BatchV1Api(api_client())

    def list(self, namespace: str, owner_uid: str) -> list[dict[str, Any]]:
        listed = _api(
            self._batch().list_namespaced_job,
            namespace,
            label_selector=f"{BACKFILL_OWNER_UID_LABEL}={owner_uid}",
        )
        items: list[dict[str, Any]] = api_client().sanitize_for_serialization(listed.items)
        return items

    def create(self, body: dict[str, Any]) -> None:
        namespace = body["metadata"]["namespace"]
        try:
            _api(self._batch().create_namespaced_job, namespace, body)
        except ApiException as exc:
            if exc.status == 409:
                raise JobExists(body["metadata"]["name"]) from None
            if exc.status in (400, 422):
                raise JobRejected(_api_message(exc)) from None
            raise

    def delete(self, namespace: str, name: str) -> None:
        try:
            _api(
                self._batch().delete_namespaced_job,
                name,
                namespace,
                propagation_policy="Background",
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    def termination_message(self, namespace: str, job: str) -> str:
        pods = _api(
            kubernetes.client.CoreV1Api(api_client()).list_namespaced_pod,
            namespace,
            label_selector=f"batch.kubernetes.io/job-name={job}",
        )
        return termination_message(api_client().sanitize_for_serialization(pods.items))


def termination_message(pods: list[dict[str, Any]]) -> str:
    """The message of the last container to terminate with a failure, among `pods`."""
    best: tuple[str, str] = ("", "")
    for pod in pods:
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            for state in (status.get("state"), status.get("lastState")):
                done = (state or {}).get("terminated") or {}
                if done.get("exitCode") and (done.get("message") or done.get("reason")):
                    when = str(done.get("finishedAt") or "")
                    text = (done.get("message") or done.get("reason") or "").strip()
                    if when >= best[0]:
                        best = (when, text)
    return best[1]


def _api_message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except ValueError:
        return str(exc.reason)


if TYPE_CHECKING:

    def _jobs_conform(store: Jobs) -> JobStore:
        return store
