"""What the admission webhook says about a Namespace spec, as pure functions.

Two kinds of answers (the k8s layer turns them into an AdmissionReview response):

- refusals: cross-object checks the CRD schema cannot make, each naming its field
  (`spec.plugins[1]: ...`); the API server rejects the request with them;
- warnings, which `kubectl apply` (and a server-side dry run: `kubectl diff`, Argo CD,
  Flux) prints: the plan and its fingerprint, what it destroys and how many points carry
  that data, whether it will wait for approval; a Plugin that does not exist yet; a
  `confirmPlan` that approves nothing; why the plan is not known.

A missing Plugin is a warning, not a refusal: GitOps tools and `kubectl apply -f DIR`
apply a Namespace and the Plugins it lists in any order, often in the same sync, and
the operator simply waits for the Plugin (PluginNotFound). Refusing would make such a
sync fail half-way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from vectorschema.api import CONFIRM_ANNOTATION, NamespaceSpec, PluginSpec
from vectorschema.core.actions import (
    AddVector,
    CreateCollection,
    Plan,
    RecreateCollection,
    RemoveVector,
    ReplaceVector,
    UpdateVector,
)
from vectorschema.core.approval import ApprovedBy, approval, needs_approval
from vectorschema.core.planning import PluginConflict, resolve_desired
from vectorschema.core.schema import DesiredSchema, VectorDef, vector_def_from_spec

#: Every warning starts with this, so a reader of `kubectl apply` output knows its source.
PREFIX = "vectorschema: "


@dataclass(frozen=True)
class Checked:
    """The spec's cross-object checks: refusals and warnings, and the desired schema when
    it can be known (no refusal, every Plugin present)."""

    refusals: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    desired: DesiredSchema | None = None


def check_spec(spec: NamespaceSpec, plugins: Mapping[str, PluginSpec]) -> Checked:
    """Cross-object checks of `spec` against the Plugins that exist now."""
    refusals: list[str] = []
    warnings: list[str] = []
    listed = {p.name for p in spec.plugins}
    for i, coll in enumerate(spec.collections):
        for j, name in enumerate(coll.plugins):
            if name not in listed:
                refusals.append(
                    f"spec.collections[{i}].plugins[{j}]: plugin {name!r} (feeding collection "
                    f"{coll.id!r}) is not listed in spec.plugins; add it there or remove it here"
                )
    missing: list[str] = []
    known: dict[str, tuple[VectorDef, str]] = {}
    for i, ref in enumerate(spec.plugins):
        if ref.vectors is None and ref.name not in plugins:
            missing.append(ref.name)
            warnings.append(
                f"{PREFIX}spec.plugins[{i}]: Plugin {ref.name!r} does not exist yet; accepted, "
                "because Plugins may arrive later in the same sync (GitOps tools and "
                "`kubectl apply -f DIR` apply in any order); until it exists the operator "
                "waits (PluginNotFound) and changes nothing"
            )
            continue
        specs = ref.vectors if ref.vectors is not None else plugins[ref.name].vectors
        for vspec in specs:
            vdef = vector_def_from_spec(vspec)
            first = known.setdefault(vdef.name, (vdef, ref.name))
            if first[0] != vdef:
                clash = PluginConflict(vdef.name, first[1], first[0], ref.name, vdef)
                refusals.append(
                    f"spec.plugins[{i}]: {clash}; a vector name must have one definition "
                    "across the plugins of a Namespace"
                )
    if missing and not refusals:
        warnings.append(
            f"{PREFIX}the plan is not known yet: it waits for Plugin(s) {', '.join(missing)}"
        )
    desired = None if refusals or missing else resolve_desired(spec, plugins)
    return Checked(tuple(refusals), tuple(warnings), desired)


# --- the plan, as kubectl prints it -----------------------------------------------------------


def _points(n: int) -> str:
    return f"{n:,} point carries it" if n == 1 else f"{n:,} points carry it"


def _names(names: Sequence[str]) -> str:
    return ", ".join(names)


def describe_actions(plan: Plan, carrying: Mapping[str, int], at_risk: int) -> list[str]:
    """One phrase per action, e.g. `removes vector text (2,000 points carry it)`."""
    out: list[str] = []
    for a in plan.actions:
        if isinstance(a, CreateCollection):
            names = [v.name for v in a.vectors]
            out.append(f"creates collection {plan.collection} with vector(s) {_names(names)}")
        elif isinstance(a, RecreateCollection):
            changes = [
                f"{verb} {_names(names)}"
                for verb, names in (
                    ("removes", a.removed),
                    ("replaces", a.replaced),
                    ("adds", a.added),
                )
                if names
            ]
            what = f" ({'; '.join(changes)})" if changes else ""
            out.append(
                f"drops and recreates collection {plan.collection}{what}, deleting all "
                f"{at_risk:,} point(s)"
            )
        elif isinstance(a, AddVector):
            out.append(f"adds vector {a.name} in place")
        elif isinstance(a, RemoveVector):
            out.append(f"removes vector {a.name} ({_points(carrying.get(a.name, 0))})")
        elif isinstance(a, ReplaceVector):
            out.append(
                f"replaces vector {a.name} ({a.old.describe()} -> {a.vector.describe()}; "
                f"{_points(carrying.get(a.name, 0))})"
            )
        elif isinstance(a, UpdateVector):
            out.append(f"retunes vector {a.name} in place ({a.detail})")
    return out


def plan_warnings(
    plan: Plan,
    spec: NamespaceSpec,
    *,
    carrying: Mapping[str, int],
    at_risk: int,
    annotation: str | None = None,
    applied: Sequence[str] = (),
) -> list[str]:
    """What kubectl prints about `plan`: nothing for an empty plan; otherwise one line
    stating it (and, for a destructive one, whether it waits for approval), plus one
    about a `confirmPlan` that does not name it."""
    if plan.empty:
        return []
    fp = plan.fingerprint
    what = "; ".join(describe_actions(plan, carrying, at_risk))
    out: list[str] = []
    if needs_approval(plan, spec.strategy):
        verdict = approval(plan, spec, annotation, applied)
        kind = "is destructive" if plan.destructive else "needs approval"
        why = f" ({plan.reason})" if plan.drift or plan.recreates else ""
        if not verdict.approved and spec.confirm_plan == fp:  # a spent approval
            then = f"it will wait for approval: {verdict.message}"
        elif not verdict.approved:
            then = f"it will wait for approval: set spec.confirmPlan: {fp}"
        elif verdict.by is ApprovedBy.CONFIRM_PLAN:
            then = "spec.confirmPlan approves it: the operator will apply it"
        elif verdict.by is ApprovedBy.ANNOTATION:
            then = (
                f"the annotation {CONFIRM_ANNOTATION} approves it once: the operator will apply it"
            )
        else:
            then = "spec.confirm: true approves it: the operator will apply it"
        out.append(f"{PREFIX}plan {fp} {kind}: {what}{why}; {then}")
    else:
        out.append(f"{PREFIX}plan {fp} {what}; no point is lost")
    if spec.confirm_plan is not None and spec.confirm_plan != fp:
        need = (
            f"set spec.confirmPlan: {fp} to approve this plan"
            if needs_approval(plan, spec.strategy)
            else "this plan needs no approval"
        )
        out.append(
            f"{PREFIX}spec.confirmPlan: {spec.confirm_plan} is not the current plan ({fp}) "
            f"and approves nothing; {need}"
        )
    return out


def unknown_plan_warning(why: str) -> str:
    """The plan could not be computed in time: say so, and where it will show."""
    return (
        f"{PREFIX}the plan is not known yet: {why}; the operator plans when it reconciles "
        "(see status.plan)"
    )
