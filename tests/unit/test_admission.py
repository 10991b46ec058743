"""The admission webhook's answers, without a cluster: the cross-object checks, the
warning text, `review()` against a real local-mode store (and against a slow or failing
one), the webhook configuration, the certificate, and the CLI's agreement on the plan.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml
from conftest import LOCAL, dense, inline, ns_spec, observed_of, plugin
from cryptography import x509
from qdrant_client import models as qm
from tests.seams import client_of

from vectorschema import cli
from vectorschema.api import OWNER_METADATA_KEY, NamespaceResource, PluginSpec
from vectorschema.controller.reconcile import Connector
from vectorschema.core.admission import (
    PREFIX,
    check_spec,
    plan_warnings,
    unknown_plan_warning,
)
from vectorschema.core.planning import make_plan, resolve_desired
from vectorschema.core.policy import Policy
from vectorschema.core.schema import CollectionSettings, ObservedCollection, vector_def_from_spec
from vectorschema.k8s import admission
from vectorschema.k8s.certs import serving_cert
from vectorschema.k8s.settings import WebhookSettings
from vectorschema.qdrant.client import ClientGateway
from vectorschema.qdrant.protocol import QdrantGateway

TEXT = dense("text", 4)
IMAGE = dense("image", 3)
TEXT_768 = dense("text", 8)
PLUGINS = {"text": plugin(TEXT), "image": plugin(IMAGE), "text-big": plugin(TEXT_768)}
KUBE_NS, NAME = "team-a", "tenant"
COLLECTION = f"{KUBE_NS}_{NAME}"
#: The admin's policy with no configuration: no other Qdrant URL, prefixed collection names.
POLICY = Policy.from_env({})
OWNER = f"{KUBE_NS}/{NAME}"


# --- cross-object checks ------------------------------------------------------------------


def test_a_collection_fed_by_an_unlisted_plugin_is_refused_naming_the_field() -> None:
    spec = ns_spec(plugins=["text"], collections=[{"id": "docs", "plugins": ["text", "image"]}])
    checked = check_spec(spec, PLUGINS)
    assert checked.refusals == (
        "spec.collections[0].plugins[1]: plugin 'image' (feeding collection 'docs') is not "
        "listed in spec.plugins; add it there or remove it here",
    )
    assert checked.desired is None


def test_two_plugins_defining_one_vector_differently_are_refused_naming_the_field() -> None:
    checked = check_spec(ns_spec(plugins=["text", "image", "text-big"]), PLUGINS)
    assert len(checked.refusals) == 1
    refusal = checked.refusals[0]
    assert refusal.startswith("spec.plugins[2]: vector 'text' is defined differently by ")
    assert "plugin 'text' (dense 4, Cosine, float32)" in refusal
    assert "plugin 'text-big' (dense 8, Cosine, float32)" in refusal


def test_an_inline_plugin_clashing_with_a_cluster_plugin_is_refused() -> None:
    spec = ns_spec(plugins=["text", inline("mine", TEXT_768)])
    assert check_spec(spec, PLUGINS).refusals[0].startswith("spec.plugins[1]: vector 'text'")


def test_identical_definitions_from_two_plugins_are_fine() -> None:
    spec = ns_spec(plugins=["text", inline("twin", TEXT)])
    checked = check_spec(spec, PLUGINS)
    assert (checked.refusals, checked.warnings) == ((), ())
    assert checked.desired is not None and checked.desired.names == ["text"]


def test_a_missing_plugin_is_a_warning_that_says_why_it_is_accepted() -> None:
    checked = check_spec(ns_spec(plugins=["text", "later"]), PLUGINS)
    assert checked.refusals == ()
    assert checked.desired is None
    first, second = checked.warnings
    assert first.startswith(f"{PREFIX}spec.plugins[1]: Plugin 'later' does not exist yet")
    assert "may arrive later in the same sync" in first
    assert second == f"{PREFIX}the plan is not known yet: it waits for Plugin(s) later"


# --- the plan as kubectl prints it --------------------------------------------------------


def _plan(spec_doc: Mapping[str, Any], observed: ObservedCollection | None) -> Any:
    spec = ns_spec(spec_doc)
    desired = resolve_desired(spec, PLUGINS)
    return spec, make_plan(
        COLLECTION, desired, observed, strategy=spec.strategy, capabilities=LOCAL
    )


def test_a_destructive_plan_names_the_vector_the_points_and_the_approval() -> None:
    spec, plan = _plan({"plugins": ["image"]}, observed_of(TEXT, IMAGE, points=2000))
    warnings = plan_warnings(plan, spec, carrying={"text": 2000}, at_risk=2000)
    assert warnings == [
        f"vectorschema: plan {plan.fingerprint} is destructive: removes vector text "
        f"(2,000 points carry it); it will wait for approval: set spec.confirmPlan: "
        f"{plan.fingerprint}"
    ]


def test_a_non_destructive_plan_says_no_point_is_lost() -> None:
    spec, plan = _plan({"plugins": ["text", "image"]}, observed_of(TEXT, points=5))
    assert plan_warnings(plan, spec, carrying={}, at_risk=0) == [
        f"vectorschema: plan {plan.fingerprint} adds vector image in place; no point is lost"
    ]


def test_a_new_collection_is_created_without_loss() -> None:
    spec, plan = _plan({"plugins": ["text", "image"]}, None)
    assert plan_warnings(plan, spec, carrying={}, at_risk=0) == [
        f"vectorschema: plan {plan.fingerprint} creates collection {COLLECTION} with "
        "vector(s) text, image; no point is lost"
    ]


def test_a_replaced_vector_shows_both_definitions() -> None:
    spec, plan = _plan({"plugins": ["text-big"]}, observed_of(TEXT, points=1))
    (warning,) = plan_warnings(plan, spec, carrying={"text": 1}, at_risk=1)
    assert (
        "is destructive: replaces vector text (dense 4, Cosine, float32 -> dense 8, Cosine, "
        "float32; 1 point carries it)" in warning
    )


def test_recreate_says_every_point_goes() -> None:
    spec, plan = _plan(
        {"plugins": ["text", "image"], "strategy": "Recreate"}, observed_of(TEXT, points=7)
    )
    (warning,) = plan_warnings(plan, spec, carrying={}, at_risk=7)
    assert f"drops and recreates collection {COLLECTION} (adds image), deleting all 7" in warning
    assert "strategy is Recreate" in warning


def test_confirm_plan_matching_the_plan_approves_it() -> None:
    spec, plan = _plan({"plugins": ["image"]}, observed_of(TEXT, IMAGE, points=3))
    spec = spec.model_copy(update={"confirm_plan": plan.fingerprint})
    (warning,) = plan_warnings(plan, spec, carrying={"text": 3}, at_risk=3)
    assert warning.endswith("spec.confirmPlan approves it: the operator will apply it")


def test_confirm_true_approves_it() -> None:
    spec, plan = _plan({"plugins": ["image"], "confirm": True}, observed_of(TEXT, IMAGE))
    (warning,) = plan_warnings(plan, spec, carrying={"text": 0}, at_risk=0)
    assert warning.endswith("spec.confirm: true approves it: the operator will apply it")


def test_confirm_plan_naming_another_plan_is_a_warning() -> None:
    stale = "0123456789abcdef"
    spec, plan = _plan(
        {"plugins": ["image"], "confirmPlan": stale}, observed_of(TEXT, IMAGE, points=3)
    )
    first, second = plan_warnings(plan, spec, carrying={"text": 3}, at_risk=3)
    assert first.endswith(f"it will wait for approval: set spec.confirmPlan: {plan.fingerprint}")
    assert second == (
        f"vectorschema: spec.confirmPlan: {stale} is not the current plan ({plan.fingerprint}) "
        f"and approves nothing; set spec.confirmPlan: {plan.fingerprint} to approve this plan"
    )


def test_confirm_plan_on_a_plan_that_needs_no_approval_is_a_warning() -> None:
    stale = "0123456789abcdef"
    spec, plan = _plan({"plugins": ["text", "image"], "confirmPlan": stale}, observed_of(TEXT))
    assert plan_warnings(plan, spec, carrying={}, at_risk=0)[1].endswith(
        "approves nothing; this plan needs no approval"
    )


def test_an_empty_plan_says_nothing() -> None:
    spec, plan = _plan({"plugins": ["text"]}, observed_of(TEXT))
    assert plan.empty
    assert plan_warnings(plan, spec, carrying={}, at_risk=0) == []


# --- review(): the whole answer ----------------------------------------------------------


def body(spec: Mapping[str, Any], *, status: Mapping[str, Any] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "vectorschema.dev/v1alpha1",
        "kind": "Namespace",
        "metadata": {"name": NAME, "namespace": KUBE_NS, "uid": "uid-1", "generation": 1},
        "spec": {**spec, "plugins": [{"name": p} for p in spec.get("plugins", [])]},
    }
    if status is not None:
        doc["status"] = dict(status)
    return doc


class ReadOnly:
    """The store's gateway, with every write failing the test: the webhook only reads."""

    def __init__(self, inner: QdrantGateway, delay: float = 0.0) -> None:
        self.inner, self.delay, self.reads = inner, delay, 0

    def __getattr__(self, name: str) -> Any:
        if name in ("capabilities", "observe", "count_with_vector"):
            self.reads += 1
            time.sleep(self.delay)
            return getattr(self.inner, name)
        raise AssertionError(f"the webhook called {name}: a write")


def connects_to(gateway: Any) -> Any:
    def connector_for(resource: NamespaceResource) -> Connector:
        return lambda: gateway

    return connector_for


def no_connection(resource: NamespaceResource) -> Connector:
    def connect() -> QdrantGateway:
        raise AssertionError("the webhook read Qdrant")

    return connect


def vouching(old: Mapping[str, Any] | None) -> admission.LiveReader:
    """The API server agrees with the request: the live object is the request's
    oldObject (UPDATE), or there is none yet (CREATE)."""
    uid = None if old is None else old["metadata"]["uid"]
    return lambda ns, name: uid


def review(
    new: Mapping[str, Any],
    old: Mapping[str, Any] | None,
    connector_for: Any,
    plugins: Mapping[str, PluginSpec] = PLUGINS,
    plan_seconds: float = 5.0,
    read_uid: admission.LiveReader | None = None,
) -> admission.Answer:
    return asyncio.run(
        admission.review(
            new,
            old,
            lambda: plugins,
            policy=POLICY,
            plan_seconds=plan_seconds,
            read_uid=read_uid or vouching(old),
            # the API server authenticated as the caller: the operator's own connection
            default_connection=lambda: connector_for(None)(),
            authenticated=True,
        )
    )


def seed(store: ClientGateway, *vectors: Any, points: int = 0, owner: str | None = OWNER) -> None:
    store.create_collection(
        COLLECTION,
        [vector_def_from_spec(v) for v in vectors],
        CollectionSettings(),
        {OWNER_METADATA_KEY: owner} if owner else {},
    )
    if points:
        vec = {v.name: [0.1] * v.size for v in vectors if v.size}
        with client_of(store) as client:
            client.upsert(COLLECTION, [qm.PointStruct(id=i, vector=vec) for i in range(points)])


def test_review_of_a_destructive_update_reads_only_and_warns(qdrant: ClientGateway) -> None:
    seed(qdrant, TEXT, IMAGE, points=3)
    gateway = ReadOnly(qdrant)
    old = body({"plugins": ["text", "image"]})
    answer = review(body({"plugins": ["image"]}), old, connects_to(gateway))
    assert answer.refusal is None
    (warning,) = answer.warnings
    assert "is destructive: removes vector text (3 points carry it)" in warning
    assert gateway.reads > 0
    live = qdrant.observe(COLLECTION)
    assert live is not None and live.names == ["text", "image"]


# --- a request the API server does not vouch for (a forged AdmissionReview) -------------------


def no_plugins() -> Mapping[str, PluginSpec]:
    raise AssertionError("the webhook read the Plugins")


def forged(new: Mapping[str, Any], old: Mapping[str, Any] | None, live: Any) -> admission.Answer:
    seen: list[tuple[str, str]] = []

    def read_uid(ns: str, name: str) -> str | None:
        seen.append((ns, name))
        if isinstance(live, Exception):
            raise live
        return live  # type: ignore[no-any-return]

    answer = asyncio.run(
        admission.review(
            new,
            old,
            no_plugins,
            policy=POLICY,
            plan_seconds=5.0,
            read_uid=read_uid,
            default_connection=lambda: no_connection(None)(),  # type: ignore[arg-type]
            authenticated=True,
        )
    )
    assert seen == [(KUBE_NS, NAME)]
    return answer


UNVOUCHED = admission.Answer(None, [admission.UNVOUCHED_WARNING])


@pytest.mark.parametrize(
    ("old_uid", "live"),
    [
        ("guessed", "uid-1"),  # another tenant's object: the uid is not theirs to know
        ("uid-1", None),  # no such object
        (None, "uid-1"),  # an oldObject without a uid
    ],
)
def test_a_forged_update_gets_no_plan_and_reads_nothing(old_uid: str | None, live: Any) -> None:
    old = body({"plugins": ["text", "image"]})
    old["metadata"]["uid"] = old_uid
    answer = forged(body({"plugins": ["image"], "adopt": True}), old, live)
    assert answer == UNVOUCHED
    assert "the plan is not known yet" in answer.warnings[0]


def test_a_forged_create_of_an_existing_object_gets_no_plan_and_reads_nothing() -> None:
    assert forged(body({"plugins": ["text"], "adopt": True}), None, "uid-1") == UNVOUCHED


def test_a_forged_review_is_never_refused_even_when_the_spec_would_be() -> None:
    """A refusal would tell the caller something (a conflict, a policy): none is given."""
    old = body({"plugins": ["text"]})
    old["metadata"]["uid"] = "guessed"
    assert forged(body({"plugins": ["text", "text-big"]}), old, "uid-1") == UNVOUCHED


def test_when_the_api_server_cannot_vouch_the_answer_has_no_plan_and_no_refusal() -> None:
    old = body({"plugins": ["text"]})
    assert forged(body({"plugins": ["image"]}), old, OSError("unreachable")) == UNVOUCHED


def test_a_vouched_update_is_planned(qdrant: ClientGateway) -> None:
    """The control for the tests above: the same reader, agreeing, lets the plan through."""
    seed(qdrant, TEXT, IMAGE, points=3)
    old = body({"plugins": ["text", "image"]})
    answer = review(
        body({"plugins": ["image"]}), old, connects_to(ReadOnly(qdrant)), read_uid=vouching(old)
    )
    assert any("removes vector text (3 points carry it)" in w for w in answer.warnings)


def test_review_skips_updates_that_do_not_change_the_spec() -> None:
    doc = body({"plugins": ["text"]})
    patched = {**doc, "metadata": {**doc["metadata"], "finalizers": ["x"]}}
    assert review(patched, doc, no_connection) == admission.Answer()


def test_review_allows_an_object_being_deleted() -> None:
    doc = body({"plugins": ["text", "image", "text-big"]})  # even a conflicting one
    doc["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert review(doc, body({"plugins": ["text"]}), no_connection) == admission.Answer()


def test_review_refuses_a_conflict_before_reading_qdrant() -> None:
    answer = review(body({"plugins": ["text", "text-big"]}), None, no_connection)
    assert answer.refusal is not None and answer.refusal.startswith("spec.plugins[1]: ")


def test_review_of_a_missing_plugin_accepts_without_reading_qdrant() -> None:
    answer = review(body({"plugins": ["text", "later"]}), None, no_connection)
    assert answer.refusal is None
    assert any("Plugin 'later' does not exist yet" in w for w in answer.warnings)


def test_review_refuses_a_collection_owned_by_another_resource(qdrant: ClientGateway) -> None:
    seed(qdrant, TEXT, owner="team-b/other")
    answer = review(body({"plugins": ["text"]}), None, connects_to(ReadOnly(qdrant)))
    assert answer.refusal is not None
    assert answer.refusal.startswith("spec.collectionName: ")
    assert "team-b/other" in answer.refusal


def test_review_refuses_an_unowned_collection_without_adopt(qdrant: ClientGateway) -> None:
    seed(qdrant, TEXT, owner=None)
    answer = review(body({"plugins": ["text"]}), None, connects_to(ReadOnly(qdrant)))
    assert answer.refusal is not None and answer.refusal.startswith("spec.adopt: ")
    adopting = review(body({"plugins": ["text"], "adopt": True}), None, connects_to(qdrant))
    assert adopting.refusal is None


def test_a_slow_qdrant_gets_an_answer_without_the_plan_in_time(qdrant: ClientGateway) -> None:
    seed(qdrant, TEXT)
    slow = ReadOnly(qdrant, delay=1.0)
    t0 = time.monotonic()
    answer = review(body({"plugins": ["image"]}), None, connects_to(slow), plan_seconds=0.3)
    took = time.monotonic() - t0
    assert answer == admission.Answer(
        None, [unknown_plan_warning("Qdrant (or the API server) did not answer within 0.3 s")]
    )
    assert took < 0.9
    assert "the plan is not known yet" in answer.warnings[0]
    # the read goes on in its reader thread (one per Kubernetes namespace): let it end
    deadline = time.monotonic() + 30
    while admission.in_flight() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert admission.in_flight() == 0


def test_an_unreachable_qdrant_gets_an_answer_without_the_plan() -> None:
    def broken(resource: NamespaceResource) -> Connector:
        def connect() -> QdrantGateway:
            raise ConnectionError("connection refused")

        return connect

    answer = review(body({"plugins": ["text"]}), None, broken)
    assert answer.refusal is None
    assert answer.warnings == [
        unknown_plan_warning("cannot read the collection: connection refused")
    ]


def test_a_failure_of_the_webhook_never_refuses_the_request() -> None:
    """kopf answers `allowed: false` when a handler raises, which failurePolicy Ignore
    does not cover: review() turns every error into a warning."""

    def unreadable() -> Mapping[str, PluginSpec]:
        raise RuntimeError("the API server said 503")

    answer = asyncio.run(
        admission.review(
            body({"plugins": ["text"]}),
            None,
            unreadable,
            policy=POLICY,
            plan_seconds=5,
            read_uid=vouching(None),
        )
    )
    assert answer == admission.Answer(
        None, [unknown_plan_warning("the webhook failed: the API server said 503")]
    )


def test_a_qdrant_url_off_the_allowlist_is_refused_before_anything_is_read() -> None:
    doc = body({"plugins": ["text"], "qdrant": {"url": "http://evil.example:6333"}})
    answer = review(doc, None, no_connection)
    assert answer.refusal is not None
    assert answer.refusal.startswith(
        "spec.qdrant.url: http://evil.example:6333 is not on the operator's allowlist"
    )


def test_a_collection_name_without_the_namespace_prefix_is_refused() -> None:
    doc = body({"plugins": ["text"], "collectionName": "team-b_theirs"})
    answer = review(doc, None, no_connection)
    assert answer.refusal is not None
    assert answer.refusal.startswith(
        "spec.collectionName: 'team-b_theirs' must start with 'team-a_'"
    )
    assert (
        review(
            body({"plugins": ["text", "later"], "collectionName": "team-a_x"}), None, no_connection
        ).refusal
        is None
    )


def test_a_spent_confirm_plan_is_said_to_wait(qdrant: ClientGateway) -> None:
    seed(qdrant, TEXT, IMAGE, points=2)
    old = body({"plugins": ["text", "image"]})
    probe = review(body({"plugins": ["image"]}), old, connects_to(qdrant))
    fp = probe.warnings[0].split()[2]
    old["status"] = {"appliedPlans": [fp]}
    answer = review(body({"plugins": ["image"], "confirmPlan": fp}), old, connects_to(qdrant))
    (warning,) = answer.warnings
    assert warning.endswith(
        f"it will wait for approval: the approval spec.confirmPlan: {fp} was spent: that plan "
        f"was applied before; approve it again with the annotation vectorschema.dev/confirm={fp}"
    )


def test_an_invalid_spec_is_refused_naming_the_field() -> None:
    doc = body({"plugins": ["text"]})
    doc["spec"]["plugins"].append({"name": "text"})  # the same name twice
    answer = review(doc, None, no_connection)
    assert answer.refusal == "spec: plugins[1].name: duplicate value 'text'"  # as status says


# --- the CLI and the webhook agree --------------------------------------------------------


def test_the_cli_and_the_webhook_compute_the_same_fingerprint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], qdrant: ClientGateway
) -> None:
    seed(qdrant, TEXT, IMAGE, points=4)
    new = body({"plugins": ["image"]})
    plugin_docs = [
        {
            "apiVersion": "vectorschema.dev/v1alpha1",
            "kind": "Plugin",
            "metadata": {"name": name},
            "spec": {"vectors": [v.to_wire() for v in spec.vectors]},
        }
        for name, spec in PLUGINS.items()
    ]
    file = tmp_path / "m.yaml"
    file.write_text(yaml.safe_dump_all([*plugin_docs, new]))
    code = cli.main(["plan", "-f", str(file), "--qdrant-path", qdrant.location, "-o", "json"])
    printed = json.loads(capsys.readouterr().out)
    assert code == 2

    answer = review(new, body({"plugins": ["text", "image"]}), connects_to(qdrant))
    (warning,) = answer.warnings
    fp = printed["fingerprint"]
    assert warning.startswith(f"vectorschema: plan {fp} is destructive")
    assert warning.endswith(f"set spec.confirmPlan: {fp}")
    assert printed["pointsAtRisk"] == 4


# --- the configuration the API server calls, and the certificate ----------------------------


def test_the_webhook_configuration_is_safe_by_default() -> None:
    ws = WebhookSettings.from_env({"VECTORSCHEMA_WEBHOOK_PORT": "9443"})
    config = admission.webhook_configuration(
        "vectorschema.dev", admission.client_config(ws, b"CA"), ws.timeout_seconds
    )
    (hook,) = config["webhooks"]
    assert hook["failurePolicy"] == "Ignore"
    assert hook["sideEffects"] == "None"
    assert hook["timeoutSeconds"] == 5
    assert hook["rules"][0]["operations"] == ["CREATE", "UPDATE"]
    assert hook["rules"][0]["resources"] == ["namespaces"]
    assert hook["rules"][0]["apiGroups"] == ["vectorschema.dev"]
    assert hook["clientConfig"]["url"] == "https://127.0.0.1:9443/plan"
    assert ws.plan_seconds < ws.timeout_seconds


def test_in_a_cluster_the_configuration_names_the_service() -> None:
    ws = WebhookSettings.from_env(
        {
            "VECTORSCHEMA_WEBHOOK_PORT": "9443",
            "VECTORSCHEMA_WEBHOOK_ADDR": "0.0.0.0",
            "VECTORSCHEMA_WEBHOOK_SERVICE": "vectorschema-system/vectorschema-webhook",
        }
    )
    assert admission.client_config(ws, b"CA")["service"] == {
        "namespace": "vectorschema-system",
        "name": "vectorschema-webhook",
        "path": "/plan",
        "port": 443,
    }


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, (None, 5, 2.0)),
        ({"VECTORSCHEMA_WEBHOOK_PORT": "8443"}, (8443, 5, 2.0)),
        ({"VECTORSCHEMA_WEBHOOK_TIMEOUT_SECONDS": "99"}, (None, 30, 2.0)),
        ({"VECTORSCHEMA_WEBHOOK_TIMEOUT_SECONDS": "2"}, (None, 2, 1.0)),
        ({"VECTORSCHEMA_WEBHOOK_PLAN_SECONDS": "10"}, (None, 5, 4.5)),
    ],
)
def test_webhook_settings_from_env(
    env: dict[str, str], expected: tuple[int | None, int, float]
) -> None:
    ws = WebhookSettings.from_env(env)
    assert (ws.port, ws.timeout_seconds, ws.plan_seconds) == expected


def test_a_client_ca_makes_the_server_require_a_client_certificate(tmp_path: Path) -> None:
    from vectorschema.k8s import settings

    ca = serving_cert(tmp_path / "clients", ["client-ca"]).cafile
    env = {
        "VECTORSCHEMA_WEBHOOK_PORT": "9443",
        "VECTORSCHEMA_WEBHOOK_CERT_DIR": str(tmp_path / "serving"),
    }
    open_server, _ = settings.admission_server(WebhookSettings.from_env(env))
    assert isinstance(open_server, kopf.WebhookServer)
    assert open_server.verify_mode is None and open_server.verify_cafile is None
    ws = WebhookSettings.from_env({**env, "VECTORSCHEMA_WEBHOOK_CLIENT_CA": str(ca)})
    assert ws.client_ca == ca
    server, _ = settings.admission_server(ws)
    assert isinstance(server, kopf.WebhookServer)
    assert server.verify_mode == ssl.CERT_REQUIRED
    assert server.verify_cafile == str(ca)


def test_a_client_ca_that_does_not_exist_stops_the_start() -> None:
    with pytest.raises(
        ValueError, match=r"VECTORSCHEMA_WEBHOOK_CLIENT_CA=/nowhere\.pem: no such file"
    ):
        WebhookSettings.from_env(
            {"VECTORSCHEMA_WEBHOOK_PORT": "9443", "VECTORSCHEMA_WEBHOOK_CLIENT_CA": "/nowhere.pem"}
        )


def test_a_made_certificate_serves_loopback_and_is_reused(tmp_path: Path) -> None:
    cert = serving_cert(tmp_path, ["127.0.0.1"])
    assert cert.generated
    assert (cert.keyfile.stat().st_mode & 0o777) == 0o600
    leaf = x509.load_pem_x509_certificate(cert.certfile.read_bytes())
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    leaf.verify_directly_issued_by(x509.load_pem_x509_certificate(cert.cafile.read_bytes()))
    ctx = ssl.create_default_context(purpose=ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert.certfile, cert.keyfile)  # a pair the server can load
    again = serving_cert(tmp_path, ["elsewhere"])
    assert not again.generated and again.certfile.read_bytes() == cert.certfile.read_bytes()


def test_replicas_in_a_cluster_share_one_certificate_through_a_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kustomize base: the first replica makes the Secret, the others read it, so
    every replica serves a certificate of the one CA registered."""
    from vectorschema.k8s import kube, settings

    secrets: dict[tuple[str, str], dict[str, bytes]] = {}

    def read_or_create(ns: str, name: str, make: Any) -> dict[str, bytes]:
        return secrets.setdefault((ns, name), make())

    monkeypatch.setattr(kube, "read_or_create_secret", read_or_create)
    env = {
        "VECTORSCHEMA_WEBHOOK_PORT": "9443",
        "VECTORSCHEMA_WEBHOOK_ADDR": "0.0.0.0",
        "VECTORSCHEMA_WEBHOOK_SERVICE": "vs-system/vs-webhook",
        "VECTORSCHEMA_WEBHOOK_CERT_SECRET": "vs-webhook-cert",
    }
    cas = []
    for replica in ("a", "b"):
        ws = WebhookSettings.from_env(
            {**env, "VECTORSCHEMA_WEBHOOK_CERT_DIR": str(tmp_path / replica)}
        )
        _, ca = settings.admission_server(ws)
        cas.append(ca)
    assert list(secrets) == [("vs-system", "vs-webhook-cert")]
    assert cas[0] == cas[1] == secrets[("vs-system", "vs-webhook-cert")]["ca.crt"]
    leaf = x509.load_pem_x509_certificate((tmp_path / "b" / "tls.crt").read_bytes())
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "vs-webhook.vs-system.svc" in sans.get_values_for_type(x509.DNSName)
