"""Reconcile one Namespace: resolve plugins, observe, plan, approve, execute, report.

This is the whole control loop for one resource, free of kopf: the kopf layer calls
`reconcile()` with the resource, the known Plugins and a way to reach Qdrant, and gets
back the new status, the Events to post and whether the one-shot approval annotation
must be removed. The kopf layer writes the status once; the only other write is the
intent record (`status.operation`) that the pass asks for through `write_intent` before a
destructive step, so a crash in the middle resumes and finishes on restart.

One `Pass` object per call holds what every step needs (the resource, the gateway, the
status being built, the Events, the time); failures are mapped by `errors.classify`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from vectorschema.api import (
    CONFIRM_ANNOTATION,
    EventReason,
    NamespaceResource,
    NamespaceStatus,
    Operation,
    PluginSpec,
    Reason,
    timestamp,
)
from vectorschema.controller.errors import Failure, Phase, classify
from vectorschema.controller.executor import execute
from vectorschema.controller.results import Event, Result
from vectorschema.core.actions import Plan
from vectorschema.core.approval import ApprovedBy, approval, needs_approval
from vectorschema.core.ownership import is_stamped, owner_metadata, ownership_refusal
from vectorschema.core.planning import make_plan, resolve_desired
from vectorschema.core.report import points_at_risk, report
from vectorschema.core.schema import Capabilities, DesiredSchema, ObservedCollection
from vectorschema.qdrant.protocol import QdrantGateway

log = logging.getLogger(__name__)

Connector = Callable[[], QdrantGateway]
IntentWriter = Callable[[NamespaceStatus], None]


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
) -> Result:
    """One pass of the control loop for `resource`. Never raises for expected failures."""
    return Pass(resource, connect, now=now, write_intent=write_intent).run(plugins)


class Pass:
    """One reconcile of one resource: its gateway, the status and Events it builds, its
    time; the steps below read and write these instead of passing them around."""

    def __init__(
        self,
        resource: NamespaceResource,
        connect: Connector,
        *,
        now: datetime,
        write_intent: IntentWriter,
    ) -> None:
        self.resource = resource
        self.now = now
        self.write_intent = write_intent
        self._connect = connect
        self._gateway: QdrantGateway | None = None
        self.old = resource.status or NamespaceStatus()
        self.status = self.old.model_copy(deep=True)
        self.result = Result(status=self.status)
        self.collection = resource.collection_name
        self.annotation = resource.metadata.annotations.get(CONFIRM_ANNOTATION)

    @property
    def gateway(self) -> QdrantGateway:
        """The namespace's Qdrant, connected on first use (after the plugins resolve)."""
        if self._gateway is None:
            self._gateway = self._connect()
        return self._gateway

    # -- the pass -------------------------------------------------------------------------

    def run(self, plugins: Mapping[str, PluginSpec]) -> Result:
        if self.status.collection != self.collection:
            # a new collection: the old baseline means nothing
            self.status.set_live(None, None)
        self.status.collection = self.collection
        phase = Phase.OBSERVE
        try:
            desired = resolve_desired(self.resource.spec, plugins)
            capabilities = self.gateway.capabilities()
            observed = self.gateway.observe(self.collection)
            phase = Phase.APPLY
            self._plan_and_apply(desired, capabilities, observed)
        except Exception as exc:
            failure = classify(exc, phase)
            if failure is None:
                raise
            self._fail(failure, str(exc))
        return self.result

    def _plan_and_apply(
        self,
        desired: DesiredSchema,
        capabilities: Capabilities,
        observed: ObservedCollection | None,
    ) -> None:
        resource, spec, status = self.resource, self.resource.spec, self.status
        operation = self.old.operation
        refusal = ownership_refusal(resource, observed) if operation is None else None
        if refusal is not None:
            status.plan = None
            self._stalled(refusal.reason, refusal.message)
            return

        plan = make_plan(
            self.collection,
            desired,
            observed,
            strategy=spec.strategy,
            capabilities=capabilities,
            last_applied=status.vectors if operation is None else None,
        )
        if operation is not None and self._resume(plan, operation):
            self._finish(None, order=desired.names)
            return
        if plan.empty:
            self._stamp_adopted(observed)
            if status.last_reconfigure is None:
                status.last_reconfigure = report(
                    plan, desired, observed, spec, time=timestamp(self.now)
                )
            self._finish(observed, order=desired.names, touched=False)
            return

        verdict = approval(plan, spec, self.annotation)
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
        if needs_approval(plan, spec.strategy):
            status.operation = Operation(
                plan_fingerprint=plan.fingerprint,
                started=timestamp(self.now),
                actions=[a.to_status() for a in plan.actions],
                result=outcome,
            )
            self._reconciling(
                Reason.APPLYING, f"applying plan {plan.fingerprint} ({verdict.message})"
            )
            self.write_intent(status)
        if not plan.recreates:  # a recreate stamps the new collection itself
            self._stamp_adopted(observed)
        execute(plan, self.gateway, owner_metadata(resource))
        status.operation = None
        status.last_reconfigure = outcome
        self.result.remove_annotation = verdict.by is ApprovedBy.ANNOTATION
        created = EventReason.COLLECTION_CREATED if observed is None else EventReason.RECONFIGURED
        self.result.events.append(Event("Normal", created, outcome.message))
        self._finish(None, order=desired.names)

    # -- steps ----------------------------------------------------------------------------

    def _stamp_adopted(self, observed: ObservedCollection | None) -> None:
        """Stamp ownership on an adopted collection (one nobody owned), before changing it."""
        if observed is not None and not is_stamped(observed):
            self.gateway.set_metadata(observed.name, owner_metadata(self.resource))

    def _resume(self, plan: Plan, operation: Operation) -> bool:
        """Finish an operation a crash interrupted. False when the world moved on."""
        if (
            not plan.empty
            and plan.fingerprint != operation.plan_fingerprint
            and needs_approval(plan, self.resource.spec.strategy)
        ):
            # Something else changed since the intent was recorded: plan afresh.
            self.status.operation = None
            return False
        if not plan.empty:
            execute(plan, self.gateway, owner_metadata(self.resource))
        self.status.operation = None
        self.status.last_reconfigure = operation.result
        self.result.events.append(
            Event(
                "Normal",
                EventReason.RESUMED,
                f"finished plan {operation.plan_fingerprint} interrupted at "
                f"{operation.started}: {operation.result.message}",
            )
        )
        self.result.remove_annotation = self.annotation == operation.plan_fingerprint
        return True

    def _await_confirmation(
        self,
        plan: Plan,
        observed: ObservedCollection | None,
        detail: str,
        order: Sequence[str],
    ) -> None:
        """Put the pending plan in status (with what it puts at risk); tell once per plan."""
        status = self.status
        at_risk = points_at_risk(plan, observed, self.gateway.count_with_vector)
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
        live = observed
        if touched or observed is None:
            live = self.gateway.observe(self.collection)
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
        self.result.retry_after = failure.retry_after

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
    at_risk = status.plan.points_at_risk if status.plan is not None else 0
    what = plan.reason or "the plan changes the collection"
    message = (
        f"plan {plan.fingerprint} needs confirmation: {what}; {at_risk} point(s) at risk. "
        f"Approve with spec.confirmPlan: {plan.fingerprint}, or annotate "
        f"{CONFIRM_ANNOTATION}={plan.fingerprint}"
    )
    return f"{message} ({detail})" if detail else message


def _ordered(names: Sequence[str], order: Sequence[str]) -> list[str]:
    """Live vector names in the plugins' order (the order users wrote), others after."""
    rank = {n: i for i, n in enumerate(order)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))
