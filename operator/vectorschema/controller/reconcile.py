"""Reconcile one Namespace: resolve plugins, observe, plan, approve, execute, report.

This is the whole control loop for one resource, free of kopf: the kopf layer calls
`reconcile()` with the resource, the known Plugins and a way to reach Qdrant, and gets
back the new status and the Events to post. The kopf layer writes the status once at the
end; during the pass the only writes are those `reconcile()` asks for through
`write_intent`, each guarded by the object's resourceVersion:

- before the first step of a plan that needed approval, the operation record
  (`status.operation`: fingerprint, collection, connection, approver, generation, steps);
- after each step, the record with that step `Done`;
- before resuming a recorded operation, a claim (the record with `claims` + 1).

If the object changed since the pass read it (another replica, a spec edit), the write
fails and nothing further runs. Before every destructive step the collection's ownership
is read again. A recorded operation resumes only while the object still approves it, on
the same collection and connection; otherwise it halts (`OperationHalted`) and status
says which steps are done and which remain.

One `Pass` object per call holds what every step needs (the resource, its gateway,
connected on first use, the status being built, the Events, the time); failures are
mapped by `errors.classify`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from vectorschema.api import (
    ABANDON_ANNOTATION,
    APPLIED_METADATA_KEY,
    CONFIRM_ANNOTATION,
    FINGERPRINT_PATTERN,
    LIVE_VECTORS_METADATA_KEY,
    OPERATION_METADATA_KEY,
    ActionKind,
    EventReason,
    LastReconfigure,
    NamespaceResource,
    NamespaceStatus,
    Operation,
    OperationStep,
    PluginSpec,
    Reason,
    timestamp,
)
from vectorschema.api.status import StepState
from vectorschema.controller.counts import CountCache
from vectorschema.controller.errors import CapExceeded, Failure, Halted, Phase, classify
from vectorschema.controller.executor import perform
from vectorschema.controller.results import Event, Observation, Result
from vectorschema.core.actions import Action, AtRisk, CreateCollection, Plan
from vectorschema.core.approval import ApprovedBy, approval, needs_approval, still_approves
from vectorschema.core.backfill import requests_after
from vectorschema.core.caps import Caps
from vectorschema.core.operation import (
    Intent,
    applied_plans,
    continuation,
    finished_metadata,
    intent_metadata,
    partial_report,
    progress,
    recorded_intent,
)
from vectorschema.core.ownership import (
    adoption_metadata,
    drift_baseline,
    live_metadata,
    needs_stamp,
    owner_metadata,
    ownership_refusal,
)
from vectorschema.core.planning import fingerprint, make_plan, resolve_desired
from vectorschema.core.policy import SCRUBBER, Policy, remember_applied
from vectorschema.core.report import points_at_risk, report
from vectorschema.core.schema import Capabilities, DesiredSchema, ObservedCollection
from vectorschema.qdrant.errors import QdrantRejected, QdrantTimeout
from vectorschema.qdrant.protocol import QdrantGateway

log = logging.getLogger(__name__)

Connector = Callable[[], QdrantGateway]
IntentWriter = Callable[[NamespaceStatus], None]

#: Points at risk of each pending plan, counted once (process-wide).
POINTS_AT_RISK = CountCache()
#: Removes the one-shot approval annotation, guarded by resourceVersion; raises if it
#: cannot (then nothing runs).
AnnotationConsumer = Callable[[], None]
#: How an operation records the embedded Qdrant as its connection.
EMBEDDED = "embedded"


def _no_annotation_consumer() -> None:
    raise RuntimeError("this pass cannot remove the approval annotation")


def invalid_spec(
    old: NamespaceStatus,
    message: str,
    generation: int | None,
    now: datetime,
    reason: Reason = Reason.INVALID_SPEC,
) -> Result:
    """The spec does not parse (or is refused before anything is read): say which field,
    touch nothing."""
    status = old.model_copy(deep=True)
    status.plan = None
    status.set_stalled(reason, message, generation=generation, now=now)
    return Result(status=status)


def reconcile(
    resource: NamespaceResource,
    plugins: Mapping[str, PluginSpec],
    connect: Connector,
    *,
    now: datetime,
    write_intent: IntentWriter,
    policy: Policy | None = None,
    connection: str = EMBEDDED,
    consume_annotation: AnnotationConsumer = _no_annotation_consumer,
    counts: CountCache = POINTS_AT_RISK,
    caps: Caps | None = None,
) -> Result:
    """One pass of the control loop for `resource`. Never raises for expected failures.

    `policy` is the admin's tenancy policy (default: the safe defaults); `connection` is
    how an operation records the Qdrant this pass talks to (the URL, or `embedded`);
    `caps` the admin's limits on what one tenant may cost (default: `core.caps` defaults).
    """
    return Pass(
        resource,
        connect,
        now=now,
        write_intent=write_intent,
        policy=policy or Policy(),
        connection=connection,
        consume_annotation=consume_annotation,
        counts=counts,
        caps=caps,
    ).run(plugins)


class Pass:
    """One reconcile of one resource: builds `status` and the Events, step by step."""

    def __init__(
        self,
        resource: NamespaceResource,
        connect: Connector,
        *,
        now: datetime,
        write_intent: IntentWriter,
        policy: Policy | None = None,
        connection: str = EMBEDDED,
        consume_annotation: AnnotationConsumer = _no_annotation_consumer,
        counts: CountCache = POINTS_AT_RISK,
        caps: Caps | None = None,
    ) -> None:
        self.resource = resource
        self.counts = counts
        self.now = now
        self.write_intent = write_intent
        self._connect = connect
        self._gateway: QdrantGateway | None = None
        self.policy = policy or Policy()
        self.connection = connection
        self.consume_annotation = consume_annotation
        self.caps = caps if caps is not None else Caps()
        self.old = resource.status or NamespaceStatus()
        self.status = self.old.model_copy(deep=True)
        self.result = Result(status=self.status)
        self.collection = resource.collection_name
        self.annotation = resource.metadata.annotations.get(CONFIRM_ANNOTATION)
        #: The spent approvals once an approved operation runs (see `_creation_metadata`).
        self._spent: list[str] | None = None
        #: The report of a recreate interrupted after its drop (see `_unrecorded`).
        self._interrupted: LastReconfigure | None = None

    # -- the pass -------------------------------------------------------------------------

    @property
    def gateway(self) -> QdrantGateway:
        """The namespace's Qdrant, connected on first use (after the plugins resolve)."""
        if self._gateway is None:
            self._gateway = self._connect()
        return self._gateway

    def run(self, plugins: Mapping[str, PluginSpec]) -> Result:
        if self.status.collection != self.collection:
            # a new collection: the old baseline means nothing
            self.status.set_live(None, None)
        self.status.collection = self.collection
        phase = Phase.OBSERVE
        try:
            if not self._collection_name_allowed():
                return self.result
            desired = resolve_desired(self.resource.spec, plugins)
            self._check_schema(desired)
            capabilities = self.gateway.capabilities()
            observed = self.gateway.observe(self.collection)
            self._observed(capabilities, observed)
            phase = Phase.APPLY
            self._plan_and_apply(desired, capabilities, observed)
        except Halted as exc:
            operation = self.status.operation
            if operation is None:
                raise
            self._halt(operation, str(exc), None)
        except Exception as exc:
            failure = classify(exc, phase)
            if failure is None:
                raise
            self._fail(failure, SCRUBBER.scrub(str(exc)))
        return self.result

    def _observed(self, capabilities: Capabilities, observed: ObservedCollection | None) -> None:
        uid = self.resource.metadata.uid
        if uid:
            self.result.observation = Observation(
                uid, self.collection, self.connection, capabilities, observed
            )

    def _check_schema(self, desired: DesiredSchema) -> None:
        """The admin's caps on the spec and the vectors it resolves to, before connecting."""
        refused = self.caps.spec_refusals(self.resource.spec) + self.caps.schema_refusals(desired)
        if refused:
            raise CapExceeded("; ".join(r.message for r in refused))

    def _collection_name_allowed(self) -> bool:
        """The admin's rule for `spec.collectionName`, checked before any connection."""
        resource = self.resource
        refusal = self.policy.collection_refusal(
            resource.kube_namespace, self.collection, resource.default_collection
        )
        if refusal is None:
            return True
        self.status.plan = None
        self._stalled(Reason.COLLECTION_NAME_NOT_ALLOWED, refusal)
        return False

    def _plan_and_apply(
        self,
        desired: DesiredSchema,
        capabilities: Capabilities,
        observed: ObservedCollection | None,
    ) -> None:
        resource, spec, status = self.resource, self.resource.spec, self.status
        # Every pass, a recorded operation or not: never touch another's collection.
        refusal = ownership_refusal(resource, observed)
        if refusal is not None:
            status.plan = None
            self._stalled(refusal.reason, refusal.message)
            return

        try:
            self.gateway.check(desired.vectors)  # no plan starts that would fail half-way
        except QdrantRejected as exc:
            status.plan = None
            self._stalled(Reason.INVALID_SPEC, f"spec.plugins: {exc}")
            return

        metadata = observed.metadata if observed is not None else {}
        intent = recorded_intent(metadata, resource.metadata.uid)
        abandon = resource.metadata.annotations.get(ABANDON_ANNOTATION)
        if intent is not None and abandon == intent.plan:
            self._abandon(intent.plan, observed, recorded=True)
            intent = None
        if intent is not None:
            if self._continue(desired, capabilities, observed, intent):
                return
        elif self.old.operation is not None and self._unrecorded(
            self.old.operation, observed, abandon
        ):
            return

        # The drift baseline: the operator's record on the collection, never status.
        baseline = drift_baseline(resource, observed)
        plan = make_plan(
            self.collection,
            desired,
            observed,
            strategy=spec.strategy,
            capabilities=capabilities,
            last_applied=baseline.names,
            baseline_unknown=not baseline.known,
        )
        too_many = self.caps.steps_refusal(len(plan.actions))
        if too_many is not None:
            status.plan = None
            self._stalled(Reason.LIMIT_EXCEEDED, too_many.message)
            return
        if plan.empty:
            self._stamp_adopted(observed, live=True)
            if status.last_reconfigure is None:
                status.last_reconfigure = report(
                    plan, desired, observed, spec, time=timestamp(self.now)
                )
            self._finish(observed, order=desired.names, touched=False)
            return

        # Spent approvals: the operator's record on the collection; status can only add.
        spent = [*applied_plans(metadata), *(status.applied_plans or [])]
        verdict = approval(plan, spec, self.annotation, spent)
        if not verdict.approved:
            detail = verdict.message
            if self.annotation is not None and self.annotation != plan.fingerprint:
                detail = (
                    f"annotation {CONFIRM_ANNOTATION}={self.annotation} does not match the "
                    f"pending plan {plan.fingerprint}"
                )
            self._await_confirmation(plan, observed, detail, desired.names)
            self._awaiting(status_message(plan, status, detail))
            return

        outcome = fresh = report(plan, desired, observed, spec, time=timestamp(self.now))
        if self._interrupted is not None and plan.creates:
            outcome = self._interrupted
        approved = needs_approval(plan, spec.strategy)
        stamp = not plan.recreates  # a recreate stamps the new collection itself
        if approved:
            if verdict.by is ApprovedBy.ANNOTATION:
                # Spent before anything runs: if it cannot be removed, nothing runs.
                self.consume_annotation()
            assert verdict.by is not None and verdict.by is not ApprovedBy.NOT_NEEDED
            intent = Intent(
                uid=resource.metadata.uid or "",
                plan=plan.fingerprint,
                desired=self._desired_fingerprint(desired, capabilities),
                approved_by=verdict.by.value,
                generation=resource.metadata.generation,
                steps=tuple((a.kind.value, a.name or None) for a in plan.actions),
                connection=self.connection,
                started=timestamp(self.now),
            )
            status.operation = Operation(
                plan_fingerprint=plan.fingerprint,
                started=intent.started,
                collection=self.collection,
                connection=self.connection,
                approved_by=verdict.by.value,
                generation=intent.generation,
                steps=[OperationStep(action=a.kind, vector=a.name or None) for a in plan.actions],
                desired_fingerprint=intent.desired,
                result=outcome,
            )
            self._reconciling(
                Reason.APPLYING, f"applying plan {plan.fingerprint} ({verdict.message})"
            )
            self.write_intent(status)  # guarded: a pass working from an old read stops here
            if observed is not None:
                # The record a resume trusts, where no tenant writes (with the adoption
                # stamps, when due, in the same call).
                update = intent_metadata(intent)
                if stamp and needs_stamp(resource, observed):
                    update = {**adoption_metadata(resource), **update}
                self.gateway.set_metadata(self.collection, update)
                stamp = False
            self._spent = remember_applied(plan.fingerprint, spent)
        if stamp:
            self._stamp_adopted(observed)
        self._run_steps(plan.actions, range(len(plan.actions)))
        status.operation = None
        status.last_reconfigure = outcome
        if approved:
            self.gateway.set_metadata(
                self.collection,
                {**finished_metadata(plan.fingerprint, spent), **live_metadata(desired.names)},
            )
            status.applied_plans = remember_applied(plan.fingerprint, spent)
        created = EventReason.COLLECTION_CREATED if observed is None else EventReason.RECONFIGURED
        message = outcome.message
        if outcome is self._interrupted:
            created = EventReason.RESUMED
            # The interrupted plan's report came from status (a tenant may have written
            # it): the Event says only what the operator did now.
            message = (
                f"finished plan {_plan_id(outcome.plan_fingerprint)}, interrupted after "
                f"dropping the collection: created it again; {fresh.message}"
            )
        self.result.events.append(Event("Normal", created, message))
        self._request_reprocess(outcome, desired, recreated=plan.recreates, created=plan.creates)
        made = None if approved else self._made_from_nothing(plan, observed)
        self._finish(None, order=desired.names, known=made)

    # -- recorded operations --------------------------------------------------------------

    def _continue(
        self,
        desired: DesiredSchema,
        capabilities: Capabilities,
        observed: ObservedCollection | None,
        intent: Intent,
    ) -> bool:
        """Resume the operation the operator recorded on the collection, or halt it.

        It resumes only while the plan computed now is the recorded plan (same
        fingerprint) or what remains of it (its steps not yet done, in order, for the same
        desired schema), and the spec still approves it. False: it no longer applies (the
        spec or the collection changed since it started); its record is removed, and the
        pass plans afresh (what remains needs its own approval)."""
        spec, status = self.resource.spec, self.status
        fp = intent.plan
        plan = make_plan(
            self.collection,
            desired,
            observed,
            strategy=spec.strategy,
            capabilities=capabilities,
            last_applied=None,
        )
        operation = self._report_of(intent, plan, desired, observed)
        if intent.connection != self.connection:
            self._halt(operation, "the Qdrant connection (spec.qdrant) changed", observed)
            return True

        fit = None
        if intent.desired == self._desired_fingerprint(desired, capabilities):
            fit = continuation(
                intent.steps,
                [False] * len(intent.steps),  # which are done: the live collection tells
                [(a.kind.value, a.name or None) for a in plan.actions],
            )
        if fit is None:
            # The spec or the collection changed since it started: what ran is reported
            # as it is (which steps are done: as status last showed them, a report only),
            # and what is left is a new plan that needs its own approval.
            shown = self.old.operation
            if shown is not None and shown.step_pairs == operation.step_pairs:
                operation.steps = [s.model_copy() for s in shown.steps]
            if any(operation.done):
                status.last_reconfigure = self._partial(operation, observed)
            if observed is not None:
                self.gateway.set_metadata(self.collection, {OPERATION_METADATA_KEY: None})
            status.operation = None
            self.result.events.append(
                Event(
                    "Warning",
                    EventReason.RESUMED,
                    f"plan {fp} was not finished: the plan changed since it started "
                    f"({progress(operation.step_pairs, operation.done)}); planning again",
                )
            )
            return False

        withdrawn = still_approves(
            intent.approved_by,
            fp,
            spec,
            generation=self.resource.metadata.generation,
            recorded_generation=intent.generation,
        )
        for index in fit.done:
            self._mark_done(operation, index)
        if fit.steps:
            # An approval guards the Qdrant writes still to make. With none left (every
            # step ran, the operator stopped before finishing the record), the record is
            # finished whatever the spec says now: halting it would only block every later
            # change until someone abandons an operation that is done.
            if withdrawn is not None:
                self._halt(operation, withdrawn, observed)
                return True
            # Claim it: a write guarded by the version this pass read, so a replica (or a
            # pass) working from an older read does nothing.
            operation.claims += 1
            status.operation = operation
            self._reconciling(
                Reason.APPLYING,
                f"resuming plan {fp} ({progress(operation.step_pairs, operation.done)})",
            )
            self.write_intent(status)
        if not (plan.recreates or plan.creates):
            self._stamp_adopted(observed)
        spent = [
            *applied_plans(observed.metadata if observed else {}),
            *(status.applied_plans or []),
        ]
        self._spent = remember_applied(fp, spent)
        self._run_steps(plan.actions, fit.steps)
        self.gateway.set_metadata(
            self.collection, {**finished_metadata(fp, spent), **live_metadata(desired.names)}
        )
        status.operation = None
        status.last_reconfigure = operation.result
        status.applied_plans = remember_applied(fp, spent)
        recreated = any(s.action is ActionKind.RECREATE_COLLECTION for s in operation.steps)
        creates = any(s.action is ActionKind.CREATE_COLLECTION for s in operation.steps)
        self._request_reprocess(operation.result, desired, recreated=recreated, created=creates)
        self.result.events.append(
            Event(
                "Normal",
                EventReason.RESUMED,
                f"finished plan {fp} interrupted at {operation.started}: "
                f"{operation.result.message}",
            )
        )
        self._finish(None, order=desired.names)
        return True

    def _report_of(
        self,
        intent: Intent,
        plan: Plan,
        desired: DesiredSchema,
        observed: ObservedCollection | None,
    ) -> Operation:
        """status.operation for the recorded `intent`, its steps all pending (the caller
        marks those the live collection shows done). Everything that decides a resume
        comes from `intent` and the live collection; from status only what is reported
        (the outcome prepared before the first step, and the claims)."""
        shown = self.old.operation
        steps = [OperationStep(action=ActionKind(k), vector=v) for k, v in intent.steps]
        result: LastReconfigure | None = None
        claims = 0
        if shown is not None and shown.plan_fingerprint == intent.plan:
            result, claims = shown.result, shown.claims
        if result is None:  # what remains of it, as far as the operator can tell now
            result = report(plan, desired, observed, self.resource.spec, time=intent.started)
            result = result.model_copy(update={"plan_fingerprint": intent.plan})
        return Operation(
            plan_fingerprint=intent.plan,
            started=intent.started,
            collection=self.collection,
            connection=intent.connection,
            approved_by=intent.approved_by,  # one of the three (checked by parse)
            generation=intent.generation,
            steps=steps,
            desired_fingerprint=intent.desired,
            claims=claims,
            result=result,
        )

    def _unrecorded(
        self, operation: Operation, observed: ObservedCollection | None, abandon: str | None
    ) -> bool:
        """status.operation with no record of it on this collection. Status is a report,
        never an approval: nothing of it runs. True: the pass stops here (halted).

        - abandoned with the annotation: it goes;
        - on another collection or connection (spec changed mid-way): halted, as a report
          of what may be left half-done there;
        - on this collection, its plan applied (the final status write was lost): done;
        - the collection is gone: the pass creates it like any missing collection (the
          report of an interrupted recreate is kept for the creation's);
        - otherwise it is not the operator's record (written by hand): it goes, with a
          Warning Event, and the pass plans afresh (any change needs its own approval).
        """
        fp = operation.plan_fingerprint
        if abandon == fp:
            self._abandon(_plan_id(fp), observed, recorded=False)
            return False
        # Status is tenant-writable: what of it reaches a message is checked first.
        shown = _readable(operation)
        if operation.collection != self.collection:
            moved = (
                f"spec.collectionName changed since it started ({shown.collection!r} -> "
                f"{self.collection!r})"
            )
            self._halt(operation, moved, observed, shown=shown)
            return True
        if operation.connection != self.connection:
            self._halt(
                operation, "the Qdrant connection (spec.qdrant) changed", observed, shown=shown
            )
            return True
        self.status.operation = None
        if observed is None:
            # Its record went with the collection (a recreate stopped between drop and
            # create): the pass creates it as for any missing collection, by the usual rules.
            if operation.step_pairs == [("recreateCollection", None)]:
                self._interrupted = operation.result
            return False
        if fp in applied_plans(observed.metadata):
            self.status.last_reconfigure = operation.result
            return False
        self.result.events.append(
            Event(
                "Warning",
                EventReason.IGNORED,
                f"status.operation (plan {shown.plan_fingerprint}) is not recorded on collection "
                f"{self.collection}: status is not an approval; nothing of it runs, planning "
                "again",
            )
        )
        return False

    def _abandon(self, fp: str, observed: ObservedCollection | None, *, recorded: bool) -> None:
        """The annotation abandons operation `fp`: its record goes, nothing more of it
        runs; the pass plans afresh (what remains needs its own approval)."""
        if recorded and observed is not None:
            self.gateway.set_metadata(self.collection, {OPERATION_METADATA_KEY: None})
        self.status.operation = None
        self.result.events.append(
            Event(
                "Normal",
                EventReason.ABANDONED,
                f"operation {fp} abandoned ({ABANDON_ANNOTATION}={fp}); planning again",
            )
        )

    def _request_reprocess(
        self, outcome: LastReconfigure, desired: DesiredSchema, *, recreated: bool, created: bool
    ) -> None:
        """The pairs to reprocess after a plan ran (backfill Jobs under reprocess: Auto).

        A first creation (the resource never had a collection) asks for nothing: no point
        was lost, ingestion fills it. A collection created again after it was lost (status
        knew its vectors) is re-ingested like a recreate."""
        if created and not recreated:
            if self.old.vectors is None:
                return
            recreated = True
        refill = set(desired.names) if recreated else set(outcome.vectors_added)
        refill |= set(outcome.vectors_replaced)
        by_plugin: dict[str, list[str]] = {}
        for name in desired.names:
            for plugin in desired.origins.get(name, ()):
                by_plugin.setdefault(plugin, []).append(name)
        to_reprocess = (
            [c.id for c in self.resource.spec.collections]
            if recreated
            else outcome.collections_to_reprocess
        )
        self.result.reprocess = requests_after(
            plan=outcome.plan_fingerprint or "",
            to_reprocess=to_reprocess,
            collections=self.resource.spec.collections,
            plugin_vectors=by_plugin,
            refill=refill,
            recreated=recreated,
        )

    def _halt(
        self,
        operation: Operation,
        why: str,
        observed: ObservedCollection | None,
        *,
        shown: Operation | None = None,
    ) -> None:
        """Stop a recorded operation: it stays recorded, and status tells the truth.
        `shown`: the operation as the message may repeat it (when it came from status)."""
        status = self.status
        shown = shown or operation
        fp = shown.plan_fingerprint
        status.plan = None
        status.operation = operation
        if any(operation.done):
            status.last_reconfigure = self._partial(operation, observed)
        message = (
            f"operation {fp} (approved by {operation.approved_by}) halted: {why}; "
            f"{progress(shown.step_pairs, shown.done)}. To finish it, approve plan "
            f"{fp} again on the same collection and connection; to abandon it, annotate "
            f"{ABANDON_ANNOTATION}={fp}"
        )
        before = self.old.condition("Stalled")
        if before is None or before.reason != Reason.OPERATION_HALTED:
            self.result.events.append(Event("Warning", Reason.OPERATION_HALTED, message))
        self._stalled(Reason.OPERATION_HALTED, SCRUBBER.scrub(message))

    def _partial(
        self, operation: Operation, observed: ObservedCollection | None
    ) -> LastReconfigure:
        return partial_report(
            operation.result,
            operation.step_pairs,
            operation.done,
            observed.names if observed is not None else None,
            fingerprint=operation.plan_fingerprint,
            time=timestamp(self.now),
        )

    def _desired_fingerprint(self, desired: DesiredSchema, capabilities: Capabilities) -> str:
        """A fingerprint of the desired schema alone (as if nothing existed)."""
        return fingerprint(
            self.collection, desired, None, self.resource.spec.strategy, capabilities
        )

    @staticmethod
    def _mark_done(operation: Operation, index: int) -> None:
        operation.steps[index] = operation.steps[index].model_copy(update={"state": StepState.DONE})

    # -- steps ----------------------------------------------------------------------------

    def _run_steps(self, actions: Sequence[Action], indices: Sequence[int]) -> None:
        """Perform `actions` in order; with an operation recorded, re-read ownership before
        each destructive step and record each step done (a resourceVersion-guarded write:
        if the object changed, e.g. the approval was withdrawn, nothing further runs)."""
        operation = self.status.operation
        for action, index in zip(actions, indices, strict=True):
            if operation is not None and (
                action.destructive or isinstance(action, CreateCollection)
            ):
                self._guard()
            perform(self.collection, action, self.gateway, self._creation_metadata())
            if operation is not None:
                self._mark_done(operation, index)
                self.write_intent(self.status)

    def _creation_metadata(self) -> dict[str, Any]:
        """The metadata a collection is created with: the owner stamps, and while an
        approved operation runs, its plan already spent (a recreate's new collection
        holds no record of the operation: a crash right after it leaves a plan that is
        applied and known as such)."""
        metadata: dict[str, Any] = dict(owner_metadata(self.resource))
        if self._spent is not None:
            metadata[APPLIED_METADATA_KEY] = list(self._spent)
        return metadata

    def _guard(self) -> None:
        """Ownership, read again right before a destructive step."""
        live = self.gateway.observe(self.collection)
        refusal = ownership_refusal(self.resource, live)
        if refusal is not None:
            raise Halted(refusal.message)

    def _stamp_adopted(self, observed: ObservedCollection | None, *, live: bool = False) -> None:
        """Stamp an adopted collection as ours (unstamped, retained by this namespace, or
        stamped by an earlier resource of this name), before changing it. `live`: the
        collection stays as it is (nothing to change): its vectors are also recorded as
        the drift baseline when the record says otherwise (one write)."""
        if observed is None:
            return
        update: dict[str, Any] = {}
        if needs_stamp(self.resource, observed):
            update.update(adoption_metadata(self.resource))
        if live:
            names = live_metadata(observed.names)
            if (
                drift_baseline(self.resource, observed).names
                != tuple(names[LIVE_VECTORS_METADATA_KEY])
                or update
            ):
                update.update(names)
        if update:
            self.gateway.set_metadata(observed.name, update)

    def _await_confirmation(
        self,
        plan: Plan,
        observed: ObservedCollection | None,
        detail: str,
        order: Sequence[str],
    ) -> None:
        """Put the pending plan in status (with what it puts at risk); tell once per plan."""
        status = self.status
        gateway = self.gateway
        at_risk = self.counts.get(
            (gateway.location, plan.fingerprint, self.collection),
            lambda: points_at_risk(plan, observed, gateway.count_with_vector, (QdrantTimeout,)),
            tenant=self.resource.kube_namespace,
        )
        changed = status.plan is None or status.plan.fingerprint != plan.fingerprint
        status.plan = plan.to_status(at_risk)
        if observed is not None:
            # a report of what is live (the drift baseline is on the collection)
            status.set_live(observed.points_count, _ordered(observed.names, order))
        if changed:
            self.result.events.append(
                Event("Warning", EventReason.PLAN_PENDING, status_message(plan, status, detail))
            )

    def _finish(
        self,
        observed: ObservedCollection | None,
        *,
        order: Sequence[str],
        touched: bool = True,
        known: ObservedCollection | None = None,
    ) -> None:
        """Status after a successful pass; re-observes only when Qdrant was written and
        what it holds now is not `known`."""
        if known is not None:
            live: ObservedCollection | None = known
        elif not touched and observed is not None:
            live = observed
        else:
            live = self.gateway.observe(self.collection)
        self.status.plan = None
        if touched and self.result.observation is not None:
            self._observed(self.result.observation.capabilities, live)
        if touched and live is not None:
            # The drift baseline: what the operator leaves live, where no tenant writes.
            baseline = live_metadata(live.names)
            if live.metadata.get(LIVE_VECTORS_METADATA_KEY) != baseline[LIVE_VECTORS_METADATA_KEY]:
                self.gateway.set_metadata(self.collection, baseline)
        if live is not None:
            self.status.set_live(live.points_count, _ordered(live.names, order))
        self._ready(f"collection {self.collection} has {len(self.status.vectors or [])} vector(s)")

    def _made_from_nothing(
        self, plan: Plan, observed: ObservedCollection | None
    ) -> ObservedCollection | None:
        """The collection this plan made from nothing, when that is known without a read:
        none was there and the plan was one create (with the owner stamps and no point
        yet). One read and one write per new Namespace, not two reads; points written
        since, and the server's defaults for settings the spec leaves unset, show at the
        next pass's read. Else None."""
        if observed is not None or len(plan.actions) != 1:
            return None
        action = plan.actions[0]
        if not isinstance(action, CreateCollection):
            return None
        return ObservedCollection(
            name=self.collection,
            vectors=action.vectors,
            points_count=0,
            metadata={**owner_metadata(self.resource), **live_metadata(action.vectors)},
            settings=action.settings,
        )

    # -- status transitions, stamped with this pass's generation and time --------------------

    def _fail(self, failure: Failure, message: str) -> None:
        if failure.clear_plan:
            self.status.plan = None
        if failure.stalled:
            self._stalled(failure.reason, message)
        else:
            self._reconciling(failure.reason, message)
        if failure.warn:
            self.result.events.append(Event("Warning", failure.reason, message))
        self.result.retry = failure.retry
        if failure.reason is Reason.QDRANT_UNAVAILABLE and self._gateway is not None:
            self.result.unavailable = self._gateway.location

    def _ready(self, message: str) -> None:
        self.status.set_ready(message, generation=self._generation, now=self.now)

    def _reconciling(self, reason: str, message: str) -> None:
        self.status.set_reconciling(reason, message, generation=self._generation, now=self.now)

    def _stalled(self, reason: str, message: str) -> None:
        self.status.set_stalled(reason, message, generation=self._generation, now=self.now)

    def _awaiting(self, message: str) -> None:
        self.status.set_awaiting_confirmation(message, generation=self._generation, now=self.now)

    @property
    def _generation(self) -> int | None:
        return self.resource.metadata.generation


def status_message(plan: Plan, status: NamespaceStatus, detail: str) -> str:
    """What a person reads in `kubectl describe`: what waits, why, and how to approve it."""
    at_risk = (
        AtRisk(status.plan.points_at_risk, not status.plan.points_at_risk_approximate)
        if status.plan is not None
        else AtRisk(0)
    )
    what = plan.reason or "the plan changes the collection"
    message = (
        f"plan {plan.fingerprint} needs confirmation: {what}; {at_risk.describe()} at risk. "
        f"Approve with spec.confirmPlan: {plan.fingerprint}, or annotate "
        f"{CONFIRM_ANNOTATION}={plan.fingerprint}"
    )
    return f"{message} ({detail})" if detail else message


def _ordered(names: Sequence[str], order: Sequence[str]) -> list[str]:
    """Live vector names in the plugins' order (the order users wrote), others after."""
    rank = {n: i for i, n in enumerate(order)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


_FINGERPRINT = re.compile(FINGERPRINT_PATTERN)
#: What a name read from status may look like to be repeated in a message.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/@+-]{0,254}")
_UNREADABLE = "<not shown: not written by the operator>"


def _plan_id(fingerprint: str | None) -> str:
    """A fingerprint read from status, as a message may show it."""
    return fingerprint if fingerprint and _FINGERPRINT.match(fingerprint) else _UNREADABLE


def _name(text: str | None) -> str | None:
    return text if text is None or _NAME.fullmatch(text) else _UNREADABLE


def _readable(operation: Operation) -> Operation:
    """status.operation with the text a tenant could have written and a message or Event
    would repeat (fingerprint, collection, vector names) replaced unless it has the form
    the operator writes."""
    return operation.model_copy(
        update={
            "plan_fingerprint": _plan_id(operation.plan_fingerprint),
            "collection": _name(operation.collection),
            "steps": [s.model_copy(update={"vector": _name(s.vector)}) for s in operation.steps],
        }
    )
