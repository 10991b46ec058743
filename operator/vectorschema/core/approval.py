"""Approval: whether a plan may run now, and what approved it.

Pure functions of the plan and the spec (and the one-shot annotation's value).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from vectorschema.api import NamespaceSpec, Strategy
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


def approval(plan: Plan, spec: NamespaceSpec, annotation: str | None) -> Approval:
    """Whether `plan` may run now, and what approved it.

    - the one-shot annotation approves the plan whose fingerprint it holds;
    - `confirmPlan` approves exactly its fingerprint, whatever `confirm` says;
    - `confirm: true` without `confirmPlan` approves any plan (the seed's meaning).
    """
    if not needs_approval(plan, spec.strategy):
        return Approval(True, ApprovedBy.NOT_NEEDED, "")
    if annotation is not None and annotation == plan.fingerprint:
        return Approval(True, ApprovedBy.ANNOTATION, "approved once by annotation")
    if spec.confirm_plan is not None:
        if spec.confirm_plan == plan.fingerprint:
            return Approval(True, ApprovedBy.CONFIRM_PLAN, "approved by confirmPlan")
        return Approval(
            False,
            None,
            f"confirmPlan {spec.confirm_plan} does not match the pending plan {plan.fingerprint}",
        )
    if spec.confirm:
        return Approval(True, ApprovedBy.CONFIRM, "approved by confirm: true")
    return Approval(False, None, "")
