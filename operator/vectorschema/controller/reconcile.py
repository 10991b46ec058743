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
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from vectorschema.api import (
    CONFIRM_ANNOTATION,
    EventReason,
    LastReconfigure,
    NamespaceResource,
    NamespaceStatus,
    Operation,
    OperationStep,
    PluginSpec,
    Reason,
    default_collection_name,
    timestamp,
)
from vectorschema.api.status import StepState
from vectorschema.controller.counts import CountCache
from vectorschema.controller.errors import Failure, Halted, Phase, classify
from vectorschema.controller.executor import perform
from vectorschema.controller.results import Event, Result
from vectorschema.core.actions import Action, AtRisk, CreateCollection, Plan
from vectorschema.core.approval import ApprovedBy, approval, needs_approval, still_approves
from vectorschema.core.operation import continuation, partial_report, progress
from vectorschema.core.ownership import (
    adoption_metadata,
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
    old: NamespaceStatus, message: str, generation: int | None, now: datetime
) -> Result:
    """The spec does not parse: say which field, touch nothing."""
    status = old.model_copy(deep=True)
    status.plan = None
    status.set_stalled(Reason.INVALID_SPEC, message, generation=generation, now=now)
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
) -> Result:
    """One pass of the control loop for `resource`. Never raises for expected failures.

    `policy` is the admin's tenancy policy (default: the safe defaults); `connection` is
    how an operation records the Qdrant this pass talks to (the URL, or `embedded`).
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
        self.old = resource.status or NamespaceStatus()
        self.status = self.old.model_copy(deep=True)
        self.result = Result(status=self.status)
        self.collection = resource.collection_name
        self.annotation = resource.metadata.annotations.get(CONFIRM_ANNOTATION)

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
            capabilities = self.gateway.capabilities()
            observed = self.gateway.observe(self.collection)
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

    def _collection_name_allowed(self) -> bool:
        """The admin's rule for `spec.collectionName`, checked before any connection."""
        resource = self.resource
        default = default_collection_name(resource.kube_namespace, resource.metadata.name)
        refusal = self.policy.collection_refusal(resource.kube_namespace, self.collection, default)
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

        operation = self.old.operation
        if operation is not None and self._continue(desired, capabilities, observed, operation):
            return

        plan = make_plan(
            self.collection,
            desired,
            observed,
            strategy=spec.strategy,
            capabilities=capabilities,
            last_applied=status.vectors,
        )
        if plan.empty:
            self._stamp_adopted(observed)
            if status.last_reconfigure is None:
                status.last_reconfigure = report(
                    plan, desired, observed, spec, time=timestamp(self.now)
                )
            self._finish(observed, order=desired.names, touched=False)
            return

        verdict = approval(plan, spec, self.annotation, status.applied_plans)
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

        outcome = report(plan, desired, observed, spec, time=timestamp(self.now))
        approved = needs_approval(plan, spec.strategy)
        if approved:
            if verdict.by is ApprovedBy.ANNOTATION:
                # Spent before anything runs: if it cannot be removed, nothing runs.
                self.consume_annotation()
            assert verdict.by is not None and verdict.by is not ApprovedBy.NOT_NEEDED
            status.operation = Operation(
                plan_fingerprint=plan.fingerprint,
                started=timestamp(self.now),
                collection=self.collection,
                connection=self.connection,
                approved_by=verdict.by.value,
                generation=resource.metadata.generation,
                steps=[OperationStep(action=a.kind, vector=a.name or None) for a in plan.actions],
                desired_fingerprint=self._desired_fingerprint(desired, capabilities),
                result=outcome,
            )
            self._reconciling(
                Reason.APPLYING, f"applying plan {plan.fingerprint} ({verdict.message})"
            )
            self.write_intent(status)
        if not plan.recreates:  # a recreate stamps the new collection itself
            self._stamp_adopted(observed)
        self._run_steps(plan.actions, range(len(plan.actions)))
        status.operation = None
        status.last_reconfigure = outcome
        if approved:
            status.applied_plans = remember_applied(plan.fingerprint, status.applied_plans or [])
        created = EventReason.COLLECTION_CREATED if observed is None else EventReason.RECONFIGURED
        self.result.events.append(Event("Normal", created, outcome.message))
        self._finish(None, order=desired.names)

    # -- recorded operations --------------------------------------------------------------

    def _continue(
        self,
        desired: DesiredSchema,
        capabilities: Capabilities,
        observed: ObservedCollection | None,
        operation: Operation,
    ) -> bool:
        """Resume a recorded operation, or halt it. False: it no longer applies (the plan
        changed since it started); it is closed, and the pass plans afresh."""
        spec, status = self.resource.spec, self.status
        fp = operation.plan_fingerprint
        if operation.collection != self.collection:
            moved = (
                f"spec.collectionName changed since it started ({operation.collection!r} -> "
                f"{self.collection!r})"
            )
            self._halt(operation, moved, observed)
            return True
        if operation.connection != self.connection:
            self._halt(operation, "the Qdrant connection (spec.qdrant) changed", observed)
            return True

        plan = make_plan(
            self.collection,
            desired,
            observed,
            strategy=spec.strategy,
            capabilities=capabilities,
            last_applied=None,
        )
        recorded_desired = operation.desired_fingerprint
        current_desired = self._desired_fingerprint(desired, capabilities)
        fit = continuation(
            operation.step_pairs,
            operation.done,
            [(a.kind.value, a.name or None) for a in plan.actions],
            same_desired=recorded_desired == current_desired,
        )
        if fit is None or recorded_desired not in (None, current_desired):
            # The spec or the collection changed since it started: what ran is reported
            # as it is, and what is left is a new plan that needs its own approval.
            if any(operation.done):
                status.last_reconfigure = self._partial(operation, observed)
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
            operation.approved_by,
            fp,
            spec,
            generation=self.resource.metadata.generation,
            recorded_generation=operation.generation,
        )
        if withdrawn is not None:
            self._halt(operation, withdrawn, observed)
            return True

        for index in fit.done:
            self._mark_done(operation, index)
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
        self._run_steps(plan.actions, fit.steps)
        status.operation = None
        status.last_reconfigure = operation.result
        status.applied_plans = remember_applied(fp, status.applied_plans or [])
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

    def _halt(self, operation: Operation, why: str, observed: ObservedCollection | None) -> None:
        """Stop a recorded operation: it stays in status, and status tells the truth."""
        status = self.status
        fp = operation.plan_fingerprint
        status.plan = None
        status.operation = operation
        if any(operation.done):
            status.last_reconfigure = self._partial(operation, observed)
        message = (
            f"operation {fp} (approved by {operation.approved_by}) halted: {why}; "
            f"{progress(operation.step_pairs, operation.done)}. To finish it, approve plan "
            f"{fp} again on the same collection and connection; to abandon it, remove "
            "status.operation"
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
            perform(self.collection, action, self.gateway, owner_metadata(self.resource))
            if operation is not None:
                self._mark_done(operation, index)
                self.write_intent(self.status)

    def _guard(self) -> None:
        """Ownership, read again right before a destructive step."""
        live = self.gateway.observe(self.collection)
        refusal = ownership_refusal(self.resource, live)
        if refusal is not None:
            raise Halted(refusal.message)

    def _stamp_adopted(self, observed: ObservedCollection | None) -> None:
        """Stamp an adopted collection as ours (unstamped, retained by this namespace, or
        stamped by an earlier resource of this name), before changing it."""
        if observed is not None and needs_stamp(self.resource, observed):
            self.gateway.set_metadata(observed.name, adoption_metadata(self.resource))

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
            (gateway.location, plan.fingerprint),
            lambda: points_at_risk(plan, observed, gateway.count_with_vector, (QdrantTimeout,)),
        )
        changed = status.plan is None or status.plan.fingerprint != plan.fingerprint
        status.plan = plan.to_status(at_risk)
        if observed is not None:
            # status.vectors is also the baseline that tells a change by hand: keep it on drift
            vectors = status.vectors if plan.drift else _ordered(observed.names, order)
            status.set_live(observed.points_count, vectors)
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
    ) -> None:
        """Status after a successful pass; re-observes only when Qdrant was written."""
        live = (
            observed
            if not touched and observed is not None
            else self.gateway.observe(self.collection)
        )
        self.status.plan = None
        if live is not None:
            self.status.set_live(live.points_count, _ordered(live.names, order))
        self._ready(f"collection {self.collection} has {len(self.status.vectors or [])} vector(s)")

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
