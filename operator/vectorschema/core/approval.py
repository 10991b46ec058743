"""Approval: whether a plan may run now, and what approved it.

Pure functions of the plan and the spec (and the one-shot annotation's value).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from vectorschema.api import CONFIRM_ANNOTATION, NamespaceSpec, Strategy
from vectorschema.core.actions import CreateCollection, Plan


class ApprovedBy(StrEnum):
    NOT_NEEDED = "not-needed"
    CONFIRM = "confirm"
    CONFIRM_PLAN = "confirmPlan"
    ANNOTATION = "annotation"


@dataclass(frozen=True)
class Approval:
    approved: bool
    by: ApprovedBy | None
    message: str


def needs_approval(plan: Plan, strategy: Strategy) -> bool:
    """Destructive plans need approval; under Recreate every change does (seed semantics);
    so does reverting a change made by hand (drift)."""
    if plan.empty:
        return False
    if plan.drift:
        return True
    if strategy is Strategy.RECREATE:
        return any(not isinstance(a, CreateCollection) for a in plan.actions)
    return plan.destructive


def approval(
    plan: Plan,
    spec: NamespaceSpec,
    annotation: str | None,
    applied: Sequence[str] | None = None,
) -> Approval:
    """Whether `plan` may run now, and what approved it.

    - the one-shot annotation approves the plan whose fingerprint it holds (a fresh act:
      also a plan applied before);
    - `confirmPlan` approves exactly its fingerprint, whatever `confirm` says, but never
      a fingerprint already applied (`applied`, status.appliedPlans): an approval is
      spent once;
    - `confirm: true` without `confirmPlan` approves any plan (the seed's meaning: a
      standing approval, for as long as it stays in the spec).
    """
    if not needs_approval(plan, spec.strategy):
        return Approval(True, ApprovedBy.NOT_NEEDED, "")
    if annotation is not None and annotation == plan.fingerprint:
        return Approval(True, ApprovedBy.ANNOTATION, "approved once by annotation")
    if spec.confirm_plan is not None:
        if spec.confirm_plan == plan.fingerprint:
            if plan.fingerprint in (applied or ()):
                return Approval(
                    False,
                    None,
                    f"the approval spec.confirmPlan: {plan.fingerprint} was spent: that plan "
                    "was applied before; approve it again with the annotation "
                    f"{CONFIRM_ANNOTATION}={plan.fingerprint}",
                )
            return Approval(True, ApprovedBy.CONFIRM_PLAN, "approved by confirmPlan")
        return Approval(
            False,
            None,
            f"confirmPlan {spec.confirm_plan} does not match the pending plan {plan.fingerprint}",
        )
    if spec.confirm:
        return Approval(True, ApprovedBy.CONFIRM, "approved by confirm: true")
    return Approval(False, None, "")


def still_approves(
    approved_by: str,
    fingerprint: str,
    spec: NamespaceSpec,
    *,
    generation: int | None,
    recorded_generation: int | None,
) -> str | None:
    """Whether the object still approves a recorded operation; None if it does, else why
    not (for the OperationHalted message).

    - `confirm`: `confirm: true` and no `confirmPlan` naming another plan;
    - `confirmPlan`: `confirmPlan` still names this fingerprint;
    - `annotation`: the spec is the one that was approved (same generation).
    """
    if approved_by == ApprovedBy.CONFIRM:
        if not spec.confirm:
            return "spec.confirm is no longer true"
        if spec.confirm_plan is not None and spec.confirm_plan != fingerprint:
            return f"spec.confirmPlan names another plan ({spec.confirm_plan})"
        return None
    if approved_by == ApprovedBy.CONFIRM_PLAN:
        if spec.confirm_plan != fingerprint:
            return f"spec.confirmPlan no longer names {fingerprint}"
        return None
    if approved_by == ApprovedBy.ANNOTATION:
        if generation != recorded_generation:
            return (
                f"the spec changed (generation {recorded_generation} -> {generation}) since "
                f"the annotation {CONFIRM_ANNOTATION}={fingerprint} approved it"
            )
        return None
    return f"it was recorded as approved by {approved_by!r}, which is not an approval"
