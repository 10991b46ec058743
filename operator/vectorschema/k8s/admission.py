"""The admission webhook: what the API server is told about a Namespace create or update.

The kopf handler (`handlers.plan_at_admission`) hands the request here. `review()`:

1. skips what is not a spec change (kopf's own metadata patches, finaliser removal, a
   deletion in progress): those are always allowed, without reading Qdrant;
2. runs the cross-object checks (`core.admission.check_spec`) against the Plugins in
   kopf's index (no API request: a forged review costs the operator's identity nothing),
   and what the admin's tenancy policy forbids (`policy_refusals`):
   a refusal names its field;
3. plans with the same read-only `controller.preview.preview` that `vectorschema plan`
   runs, against what the operator already observed of this very object, or, only when
   the API server is authenticated as the caller, the operator's own default connection
   (`plan_source`). It never reads a Secret and never connects with a tenant's
   connection: a forged review learns nothing the tenant could not read itself. Steps 2
   and 3 run in a small thread pool of their own, for at most `plan_seconds`; if that is
   not enough the answer goes without the plan and a warning says so (the read finishes
   in the background and is dropped); past `MAX_PENDING` reviews in the pool, a review
   is answered at once without a plan;
4. answers with warnings stating the plan (`core.admission.plan_warnings`).

Nothing here writes: no Qdrant write (the preview only reads), no status write, no Event.
A dry run (`kubectl apply --dry-run=server`, `kubectl diff`) gets the same answer, so the
configuration declares `sideEffects: None`. `failurePolicy: Ignore` and a short
`timeoutSeconds` mean an operator outage never blocks an apply; the reconcile enforces
everything again.

`webhook_configuration()` builds the ValidatingWebhookConfiguration the operator
registers itself when it runs outside a cluster (`register()`).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from vectorschema.api import (
    CONFIRM_ANNOTATION,
    GROUP,
    NAMESPACE_PLURAL,
    VERSION,
    NamespaceResource,
    PluginSpec,
    describe,
)
from vectorschema.controller.errors import ConnectionRefused
from vectorschema.controller.preview import preview
from vectorschema.controller.results import Observation
from vectorschema.core.admission import PREFIX, check_spec, plan_warnings, unknown_plan_warning
from vectorschema.core.caps import Caps
from vectorschema.core.policy import SCRUBBER, Policy
from vectorschema.core.schema import Capabilities, ObservedCollection
from vectorschema.k8s import kube
from vectorschema.k8s.connection import checked_url
from vectorschema.k8s.settings import WebhookSettings
from vectorschema.qdrant.limits import TENANT
from vectorschema.qdrant.protocol import QdrantGateway

log = logging.getLogger("vectorschema")

#: The kopf handler id: also the webhook's URL path and its name in the configuration.
WEBHOOK_ID = "plan"

#: The Plugins that exist now, by name (from kopf's index, in memory: a review, forged or
#: not, costs the operator's API identity no request; on a standby replica paused by
#: peering the index may lag, and the reconcile checks again anyway).
PluginReader = Callable[[], Mapping[str, PluginSpec]]

#: The live object's metadata.uid as kopf last saw it (its index; None: it does not exist).
LiveReader = Callable[[str, str], str | None]

#: What a request the API server does not vouch for gets: no plan, no refusal, nothing
#: about the collection, the Secret or the live object (see `genuine`).
UNVOUCHED_WARNING = unknown_plan_warning(
    "this replica cannot match the request to the object it has seen (a standby replica, "
    "or the object changed meanwhile)"
)

#: Threads that read Qdrant for the webhook, apart from kopf's and the control loops':
#: a hung Qdrant can hold these, never the reconciles.
_readers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="webhook-plan")


@dataclass(frozen=True)
class Answer:
    """The webhook's answer: a refusal (the message names the field) or None, and the
    warnings kubectl prints either way."""

    refusal: str | None = None
    warnings: list[str] = field(default_factory=list)


def spec_changed(new: Mapping[str, Any], old: Mapping[str, Any] | None) -> bool:
    """A create, or an update that changes the spec (not only metadata or finalizers)."""
    return old is None or (old.get("spec") or {}) != (new.get("spec") or {})


def policy_refusals(resource: NamespaceResource, policy: Policy) -> list[str]:
    """What the admin's tenancy policy forbids in the spec itself, before anything is
    read: a `spec.qdrant.url` that does not parse or is not on the allowlist, a
    `spec.collectionName` without the Kubernetes namespace's prefix. (A collection owned
    elsewhere, retained by another namespace or not adopted is refused by the preview.)"""
    out: list[str] = []
    conn = resource.spec.qdrant
    if conn is not None and conn.url is not None:
        try:
            checked_url(conn.url, policy)
        except ConnectionRefused as exc:
            out.append(str(exc))
    refusal = policy.collection_refusal(
        resource.kube_namespace, resource.collection_name, resource.default_collection
    )
    if refusal is not None:
        out.append(refusal)
    return out


def genuine(
    resource: NamespaceResource, old: Mapping[str, Any] | None, read_uid: LiveReader
) -> bool:
    """Does the API server's own state vouch for this request? (Defense in depth: anyone
    who can reach the webhook can post an AdmissionReview.)

    - UPDATE: the live object exists and its metadata.uid is the request's oldObject's (a
      UUID another tenant cannot read without get on that object);
    - CREATE: no such object exists yet.

    This does not close a forged CREATE under a fresh name in another Kubernetes
    namespace: only authenticating the caller does (`VECTORSCHEMA_WEBHOOK_CLIENT_CA`)."""
    live_uid = read_uid(resource.kube_namespace, resource.metadata.name)
    if old is None:
        return live_uid is None
    old_uid = (old.get("metadata") or {}).get("uid")
    return bool(old_uid) and live_uid == old_uid


def evaluate(
    resource: NamespaceResource,
    old: Mapping[str, Any] | None,
    read_plugins: PluginReader,
    source: PlanSource,
    policy: Policy,
    read_uid: LiveReader,
    caps: Caps | None = None,
    served: Callable[[str], int] | None = None,
    authenticated: bool = False,
) -> Answer:
    """The answer for a parsed Namespace (blocking: run in a reader thread). Nothing is
    read (Plugins, Qdrant) before the API server vouches for an UPDATE (or, with an
    authenticated caller, a CREATE), and no Secret is ever read: the plan comes from
    `source` (see `PlanSource`). `authenticated`: the API server is proven to be the
    caller (mTLS); `served` is given only then."""
    caps = caps if caps is not None else Caps()
    try:
        # An unauthenticated CREATE is answered from the spec, the Plugins and the policy
        # alone: asking the API server whether the object exists would tell a forged
        # review which names exist in another namespace.
        vouched = True if old is None and not authenticated else genuine(resource, old, read_uid)
    except Exception as exc:  # API server unreachable: no plan, never a refusal
        log.warning("admission: cannot check %s against the API server: %s", resource.owner_id, exc)
        vouched = False
    if not vouched:
        return Answer(None, [UNVOUCHED_WARNING])
    refused = policy_refusals(resource, policy)
    refused += [r.message for r in caps.spec_refusals(resource.spec)]
    checked = check_spec(resource.spec, read_plugins())
    warnings = list(checked.warnings)
    if checked.desired is not None:
        refused += [r.message for r in caps.schema_refusals(checked.desired)]
    if refused or checked.refusals:
        return Answer("; ".join([*refused, *checked.refusals]), warnings)
    if old is None and served is not None:
        count = served(resource.kube_namespace)
        if count >= caps.namespaces:
            # a warning, not a refusal: a deletion may be on its way (GitOps order)
            warnings.append(
                f"{PREFIX}Kubernetes namespace {resource.kube_namespace!r} already holds "
                f"{count} Namespace resources; the operator serves at most {caps.namespaces} "
                "per Kubernetes namespace (the platform admin's limit): this one will be "
                "Stalled/LimitExceeded until one goes"
            )
    if checked.desired is None:
        return Answer(None, warnings)
    status = (old or {}).get("status") or {}
    try:
        gateway, note = source(resource, old)
        if gateway is None:
            warnings.append(unknown_plan_warning(note))
            return Answer(None, warnings)
        seen = preview(resource, checked.desired, gateway)
    except Exception as exc:  # Qdrant down: the reconcile will say it
        detail = SCRUBBER.scrub(" ".join(str(exc).split()))[:300] or type(exc).__name__
        warnings.append(unknown_plan_warning(f"cannot read the collection: {detail}"))
        return Answer(None, warnings)
    if seen.refusal is not None:
        message = seen.refusal.message
        if not message.startswith(seen.refusal.field):
            message = f"{seen.refusal.field}: {message}"
        return Answer(message, warnings)
    assert seen.plan is not None
    warnings += plan_warnings(
        seen.plan,
        resource.spec,
        carrying=seen.carrying,
        at_risk=seen.at_risk.points,
        annotation=resource.metadata.annotations.get(CONFIRM_ANNOTATION),
        applied=status.get("appliedPlans") or (),
    )
    too_many = caps.steps_refusal(len(seen.plan.actions))
    if too_many is not None:
        warnings.append(f"{PREFIX}{too_many.message}; the operator will not apply it")
    if note:
        warnings.append(f"{PREFIX}{note}")
    return Answer(None, warnings)


#: (resource, oldObject) -> a read-only gateway to plan against (None: no plan) and a
#: note for the warnings (why there is no plan, or what the plan is based on).
PlanSource = Callable[[NamespaceResource, Mapping[str, Any] | None], tuple[Any, str]]

#: The operator's own default connection (`connection.default_from_env`).
DefaultConnection = Callable[[], QdrantGateway]

#: Why a request gets no live plan: never a tenant's Secret or connection.
NO_OBSERVATION = (
    "the webhook plans only against what the operator has already observed of this object"
)


def plan_source(
    observed: Callable[[tuple[str, str]], Observation | None],
    default_connection: DefaultConnection | None,
    connection_of: Callable[[NamespaceResource], str],
) -> PlanSource:
    """Where the webhook's plan comes from; never a tenant's Secret or connection:

    1. when the API server is authenticated as the caller (mTLS,
       `VECTORSCHEMA_WEBHOOK_CLIENT_CA`, so the review cannot be forged) and the object
       uses the operator's own Qdrant (no `spec.qdrant`): a read through the operator's
       default connection (fresh, exact counts);
    2. else an UPDATE of an object the operator has reconciled (same UID, collection and
       connection): what its last pass observed (`Observation`), no Qdrant call; what
       the caller learns is what that object's own status already shows its readers;
    3. else no plan (a CREATE from an unauthenticated caller may be forged: it learns
       nothing of any collection).
    """

    def source(resource: NamespaceResource, old: Mapping[str, Any] | None) -> tuple[Any, str]:
        if default_connection is not None and resource.spec.qdrant is None:
            return default_connection(), ""
        key = (resource.kube_namespace, resource.metadata.name)
        seen = observed(key)
        old_uid = ((old or {}).get("metadata") or {}).get("uid")
        if (
            old is not None
            and seen is not None
            and seen.uid == old_uid
            and seen.collection == resource.collection_name
            and seen.connection == connection_of(resource)
        ):
            return ObservedGateway(seen), (
                "planned against the collection as the operator last observed it; point "
                "counts are the collection's total then"
            )
        return None, NO_OBSERVATION

    return source


class ObservedGateway:
    """A read-only gateway over an `Observation`: the preview plans against it as it
    would against Qdrant, with no call made. Counts are the collection's total."""

    def __init__(self, observation: Observation) -> None:
        self._seen = observation
        self.location = "observed"

    def capabilities(self) -> Capabilities:
        return self._seen.capabilities

    def observe(self, name: str) -> ObservedCollection | None:
        return self._seen.observed if name == self._seen.collection else None

    def count_with_vector(self, name: str, vector: str, exact: bool) -> int:
        observed = self.observe(name)
        return observed.points_count if observed is not None else 0


async def review(
    new: Mapping[str, Any],
    old: Mapping[str, Any] | None,
    read_plugins: PluginReader,
    *,
    policy: Policy,
    plan_seconds: float,
    read_uid: LiveReader,
    observed: Callable[[tuple[str, str]], Observation | None] = lambda key: None,
    default_connection: DefaultConnection | None = None,
    connection_of: Callable[[NamespaceResource], str] = lambda resource: "embedded",
    caps: Caps | None = None,
    served: Callable[[str], int] | None = None,
    authenticated: bool = False,
) -> Answer:
    """What to answer the API server about this Namespace create or update, within
    `plan_seconds` (else without the plan, saying so). `authenticated`: the API server
    is proven to be the caller (mTLS): only then may the answer depend on what exists
    (`default_connection`, `served` and the existence check of a CREATE are used only
    then; a forged review must not learn what exists in another namespace)."""
    if not authenticated:
        default_connection, served = None, None
    meta = dict(new.get("metadata") or {})
    if meta.get("deletionTimestamp") or not spec_changed(new, old):
        return Answer()
    try:
        resource = NamespaceResource.model_validate(
            {"metadata": meta, "spec": new.get("spec") or {}, "status": None}
        )
    except ValidationError as exc:
        return Answer(describe(exc))
    global _pending
    tenant = resource.kube_namespace
    with _pending_lock:
        busy = _pending >= MAX_PENDING
        # Authenticated (so not forged), a review may read Qdrant: one Kubernetes
        # namespace has at most one in the readers, so a tenant looping server-side dry
        # runs of a costly plan cannot hold them all.
        mine = authenticated and tenant in _tenants
        if not busy and not mine:
            _pending += 1
            if authenticated:
                _tenants.add(tenant)
    if busy:  # a flood of reviews: answer at once, read nothing
        return Answer(None, [unknown_plan_warning("the webhook is busy")])
    if mine:
        why = f"another review in Kubernetes namespace {tenant!r} is still being planned"
        return Answer(None, [unknown_plan_warning(why)])
    source = plan_source(observed, default_connection, connection_of)
    loop = asyncio.get_running_loop()
    work = loop.run_in_executor(
        _readers,
        _counted,
        tenant if authenticated else None,
        evaluate,
        resource,
        old,
        read_plugins,
        source,
        policy,
        read_uid,
        caps,
        served,
        authenticated,
    )
    try:
        return await asyncio.wait_for(asyncio.shield(work), plan_seconds)
    except TimeoutError:
        why = f"Qdrant (or the API server) did not answer within {plan_seconds:g} s"
        return Answer(None, [unknown_plan_warning(why)])
    except Exception as exc:  # an error here must not refuse the request (kopf would)
        log.exception("admission review of %s failed", resource.owner_id)
        detail = SCRUBBER.scrub(" ".join(str(exc).split()))[:300] or type(exc).__name__
        return Answer(None, [unknown_plan_warning(f"the webhook failed: {detail}")])


#: Reviews queued or running in the reader threads; past this many, a review is answered
#: at once without a plan (a flood of forged reviews costs the operator nothing more).
MAX_PENDING = 32
_pending = 0
#: Kubernetes namespaces with an authenticated review in the readers (at most one each).
_tenants: set[str] = set()
_pending_lock = threading.Lock()


def in_flight() -> int:
    """Reviews queued or running in the reader threads (also those already answered)."""
    with _pending_lock:
        return _pending


def _counted(tenant: str | None, fn: Callable[..., Answer], *args: Any) -> Answer:
    """Run one review in a reader thread; its Qdrant calls count against `tenant`'s share
    of the server's call slots (`qdrant.limits.TENANT`), as its reconciles' do."""
    global _pending
    token = TENANT.set(tenant)
    try:
        return fn(*args)
    finally:
        TENANT.reset(token)
        with _pending_lock:
            _pending -= 1
            if tenant is not None:
                _tenants.discard(tenant)


# --- the configuration the API server calls -------------------------------------------------


def client_config(ws: WebhookSettings, ca_pem: bytes) -> dict[str, Any]:
    """How the API server reaches the webhook: a URL on loopback (outside a cluster), or
    the Service in front of the operator (`VECTORSCHEMA_WEBHOOK_SERVICE`)."""
    bundle = base64.b64encode(ca_pem).decode("ascii")
    if ws.service is not None:
        svc_ns, _, rest = ws.service.partition("/")
        name, _, port = rest.partition(":")
        return {
            "service": {
                "namespace": svc_ns,
                "name": name,
                "path": f"/{WEBHOOK_ID}",
                "port": int(port or 443),
            },
            "caBundle": bundle,
        }
    host = f"[{ws.host}]" if ":" in ws.host else ws.host
    return {"url": f"https://{host}:{ws.port}/{WEBHOOK_ID}", "caBundle": bundle}


def webhook_configuration(
    name: str, client: Mapping[str, Any], timeout_seconds: int
) -> dict[str, Any]:
    """The ValidatingWebhookConfiguration: Namespace creates and updates, safe by default
    (failurePolicy Ignore, a few seconds' timeout, no side effects so dry runs are sent)."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "vectorschema"}},
        "webhooks": [
            {
                "name": f"{WEBHOOK_ID}.{GROUP}",
                "admissionReviewVersions": ["v1"],
                "clientConfig": dict(client),
                "rules": [
                    {
                        "apiGroups": [GROUP],
                        "apiVersions": [VERSION],
                        "resources": [NAMESPACE_PLURAL],
                        "operations": ["CREATE", "UPDATE"],
                        "scope": "Namespaced",
                    }
                ],
                "failurePolicy": "Ignore",
                "sideEffects": "None",
                "timeoutSeconds": timeout_seconds,
                "matchPolicy": "Equivalent",
            }
        ],
    }


def register(ws: WebhookSettings, ca_pem: bytes) -> str | None:
    """Create or update the operator's webhook configuration; returns its name (None when
    the configuration is installed by the chart instead)."""
    if not ws.enabled or not ws.configuration:
        return None
    body = webhook_configuration(ws.configuration, client_config(ws, ca_pem), ws.timeout_seconds)
    kube.apply_validating_webhook(body)
    return ws.configuration
