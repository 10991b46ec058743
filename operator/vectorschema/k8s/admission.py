"""The admission webhook: what the API server is told about a Namespace create or update.

The kopf handler (`handlers.plan_at_admission`) hands the request here. `review()`:

1. skips what is not a spec change (kopf's own metadata patches, finaliser removal, a
   deletion in progress): those are always allowed, without reading Qdrant;
2. runs the cross-object checks (`core.admission.check_spec`) against the Plugins read
   from the API server, and what the admin's tenancy policy forbids (`policy_refusals`):
   a refusal names its field;
3. plans against the live collection: the Namespace's own connection
   (`connection.connector_for`), the same read-only `controller.preview.preview` that
   `vectorschema plan` runs. Steps 2 and 3 run in a small thread pool of their own, for
   at most `plan_seconds`; if Qdrant is slower the answer goes without the plan and a
   warning says so (the read finishes in the background and is dropped);
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
    default_collection_name,
    describe,
)
from vectorschema.controller.errors import ConnectionRefused
from vectorschema.controller.preview import preview
from vectorschema.controller.reconcile import Connector
from vectorschema.core.admission import check_spec, plan_warnings, unknown_plan_warning
from vectorschema.core.policy import SCRUBBER, Policy
from vectorschema.k8s import kube
from vectorschema.k8s.connection import checked_url
from vectorschema.k8s.settings import WebhookSettings

log = logging.getLogger("vectorschema")

#: The kopf handler id: also the webhook's URL path and its name in the configuration.
WEBHOOK_ID = "plan"

#: The Plugins that exist now, by name (read from the API server, not from kopf's index:
#: a standby replica, paused by peering, still answers admission requests, and its index
#: may be stale).
PluginReader = Callable[[], Mapping[str, PluginSpec]]

#: The live object's metadata.uid, read from the API server (None: it does not exist).
LiveReader = Callable[[str, str], str | None]

#: What a request the API server does not vouch for gets: no plan, no refusal, nothing
#: about the collection, the Secret or the live object (see `genuine`).
UNVOUCHED_WARNING = unknown_plan_warning(
    "the request does not match the object in the API server (changed meanwhile?)"
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
    default = default_collection_name(resource.kube_namespace, resource.metadata.name)
    refusal = policy.collection_refusal(resource.kube_namespace, resource.collection_name, default)
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
    connector_for: Callable[[NamespaceResource], Connector],
    policy: Policy,
    read_uid: LiveReader,
) -> Answer:
    """The answer for a parsed Namespace (blocking: run in a reader thread). Nothing is
    read (Plugins, Secrets, Qdrant) before the API server vouches for the request."""
    try:
        vouched = genuine(resource, old, read_uid)
    except Exception as exc:  # API server unreachable: no plan, never a refusal
        log.warning("admission: cannot check %s against the API server: %s", resource.owner_id, exc)
        vouched = False
    if not vouched:
        return Answer(None, [UNVOUCHED_WARNING])
    refused = policy_refusals(resource, policy)
    checked = check_spec(resource.spec, read_plugins())
    warnings = list(checked.warnings)
    if refused or checked.refusals:
        return Answer("; ".join([*refused, *checked.refusals]), warnings)
    if checked.desired is None:
        return Answer(None, warnings)
    status = (old or {}).get("status") or {}
    last_applied = status.get("vectors")
    try:
        seen = preview(
            resource, checked.desired, connector_for(resource)(), last_applied=last_applied
        )
    except Exception as exc:  # Qdrant down, a Secret missing: the reconcile will say it
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
    return Answer(None, warnings)


async def review(
    new: Mapping[str, Any],
    old: Mapping[str, Any] | None,
    read_plugins: PluginReader,
    connector_for: Callable[[NamespaceResource], Connector],
    *,
    policy: Policy,
    plan_seconds: float,
    read_uid: LiveReader,
) -> Answer:
    """What to answer the API server about this Namespace create or update, within
    `plan_seconds` (else without the plan, saying so)."""
    meta = dict(new.get("metadata") or {})
    if meta.get("deletionTimestamp") or not spec_changed(new, old):
        return Answer()
    try:
        resource = NamespaceResource.model_validate(
            {"metadata": meta, "spec": new.get("spec") or {}, "status": None}
        )
    except ValidationError as exc:
        return Answer(describe(exc))
    loop = asyncio.get_running_loop()
    work = loop.run_in_executor(
        _readers, evaluate, resource, old, read_plugins, connector_for, policy, read_uid
    )
    try:
        return await asyncio.wait_for(work, plan_seconds)
    except TimeoutError:
        why = f"Qdrant (or the API server) did not answer within {plan_seconds:g} s"
        return Answer(None, [unknown_plan_warning(why)])
    except Exception as exc:  # an error here must not refuse the request (kopf would)
        log.exception("admission review of %s failed", resource.owner_id)
        detail = SCRUBBER.scrub(" ".join(str(exc).split()))[:300] or type(exc).__name__
        return Answer(None, [unknown_plan_warning(f"the webhook failed: {detail}")])


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
