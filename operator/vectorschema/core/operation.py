"""Resuming a recorded operation: which recorded steps are done, and which actions of a
fresh plan continue the ones that remain. Pure; steps are `(action, vector)` pairs with
the action names of the status API (`removeVector`, `replaceVector`, ...).

A crash (or an outage) can stop an operation anywhere: between two steps, or inside one
(a replace deleted the old vector but did not create the new one; a recreate dropped the
collection but did not create it again). Planning again against the live collection
gives the actions still needed; each must continue a recorded step that is not done:

- `removeVector v`: done once `v` is gone; otherwise the plan removes `v`;
- `replaceVector v`: the plan replaces `v`, or adds it (the old one is already deleted),
  or has nothing for `v` (done);
- `recreateCollection`: the plan recreates, or creates (already dropped), or nothing;
- any other step: the same action, or nothing (done).

An action that continues no remaining step means the world moved on (the spec or the
collection changed): the operation cannot be resumed as approved.

Status is a report, not an authority: a tenant may be able to write `status.operation` and
`status.appliedPlans`. The operator's own record of an operation (`Intent`) and of the
plans it applied (`applied_plans`) live in the collection's Qdrant metadata, which only
the operator writes; an operation resumes only from that record (see `recorded_intent`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vectorschema.api import (
    APPLIED_METADATA_KEY,
    FINGERPRINT_PATTERN,
    OPERATION_METADATA_KEY,
    ActionKind,
    LastReconfigure,
)
from vectorschema.api.status import APPLIED_PLANS_KEPT
from vectorschema.core.policy import remember_applied

Step = tuple[str, str | None]

#: action in the fresh plan -> the recorded actions it may continue.
_CONTINUES: dict[str, tuple[str, ...]] = {
    "createCollection": ("createCollection", "recreateCollection"),
    "recreateCollection": ("recreateCollection",),
    "addVector": ("addVector", "replaceVector"),
    "removeVector": ("removeVector",),
    "replaceVector": ("replaceVector",),
    "updateVector": ("updateVector",),
}
_COLLECTION_ACTIONS = ("createCollection", "recreateCollection")


_FINGERPRINT = re.compile(FINGERPRINT_PATTERN)
_APPROVERS = ("confirm", "confirmPlan", "annotation")
_KINDS = frozenset(kind.value for kind in ActionKind)
#: Bounds of a record read back from metadata (anything larger is not the operator's).
_MAX_STEPS = 1024


@dataclass(frozen=True)
class Intent:
    """The operator's record of an operation it started, kept in the collection's
    metadata (`OPERATION_METADATA_KEY`) before the first step and removed after the last.

    `uid` binds it to one resource; `plan` is the fingerprint of the approved plan,
    `desired` that of the desired schema it was approved for; `approved_by` and
    `generation` say what approved it; `steps` are the plan's steps in order.
    """

    uid: str
    plan: str
    desired: str
    approved_by: str
    generation: int | None
    steps: tuple[Step, ...]
    connection: str
    started: str

    def wire(self) -> dict[str, Any]:
        """The JSON kept in the collection's metadata."""
        return {
            "uid": self.uid,
            "plan": self.plan,
            "desired": self.desired,
            "approvedBy": self.approved_by,
            "generation": self.generation,
            "steps": [[kind, vector] for kind, vector in self.steps],
            "connection": self.connection,
            "started": self.started,
        }

    @classmethod
    def parse(cls, raw: Any) -> Intent | None:
        """The record, or None when `raw` is not one the operator wrote."""
        if not isinstance(raw, Mapping):
            return None
        steps = raw.get("steps")
        generation = raw.get("generation")
        texts = [raw.get(k) for k in ("uid", "plan", "desired", "approvedBy", "connection")]
        if (
            not all(isinstance(t, str) for t in texts)
            or not isinstance(raw.get("started", ""), str)
            or not _FINGERPRINT.match(str(raw.get("plan")))
            or not _FINGERPRINT.match(str(raw.get("desired")))
            or raw.get("approvedBy") not in _APPROVERS
            or not (generation is None or type(generation) is int)
            or not isinstance(steps, list)
            or not 0 < len(steps) <= _MAX_STEPS
        ):
            return None
        parsed: list[Step] = []
        for step in steps:
            if (
                not isinstance(step, list)
                or len(step) != 2
                or step[0] not in _KINDS
                or not (step[1] is None or isinstance(step[1], str))
            ):
                return None
            parsed.append((step[0], step[1]))
        return cls(
            uid=str(raw["uid"]),
            plan=str(raw["plan"]),
            desired=str(raw["desired"]),
            approved_by=str(raw["approvedBy"]),
            generation=generation,
            steps=tuple(parsed),
            connection=str(raw["connection"]),
            started=str(raw.get("started", "")),
        )


def recorded_intent(metadata: Mapping[str, Any], uid: str | None) -> Intent | None:
    """The operation the operator recorded on this collection for the resource `uid`
    (None: none, or one of another resource, or not a record the operator wrote)."""
    intent = Intent.parse(metadata.get(OPERATION_METADATA_KEY))
    if intent is None or intent.uid != (uid or ""):
        return None
    return intent


def intent_metadata(intent: Intent) -> dict[str, Any]:
    """The metadata update that records `intent`."""
    return {OPERATION_METADATA_KEY: intent.wire()}


def applied_plans(metadata: Mapping[str, Any]) -> list[str]:
    """The plans the operator applied to this collection (newest first): spent approvals."""
    raw = metadata.get(APPLIED_METADATA_KEY)
    if not isinstance(raw, list):
        return []
    return [fp for fp in raw if isinstance(fp, str) and _FINGERPRINT.match(fp)][:APPLIED_PLANS_KEPT]


def finished_metadata(fingerprint: str, applied: Iterable[str]) -> dict[str, Any]:
    """The metadata update once an operation is done: its record goes, its plan is spent."""
    return {
        OPERATION_METADATA_KEY: None,
        APPLIED_METADATA_KEY: remember_applied(fingerprint, applied),
    }


@dataclass(frozen=True)
class Continuation:
    """How a fresh plan continues a recorded operation.

    `steps[i]` is the index of the recorded step that plan action `i` continues;
    `done` lists the recorded steps that need nothing more (in recorded order).
    """

    steps: tuple[int, ...]
    done: tuple[int, ...]


def continuation(
    recorded: Sequence[Step],
    states_done: Sequence[bool],
    plan: Sequence[Step],
    *,
    same_desired: bool = True,
) -> Continuation | None:
    """Map `plan` onto the recorded steps not yet done; None when it does not fit.

    A pending step the plan has nothing for is done: the live collection already shows
    it. That is only known when the desired schema is the one the operation was approved
    for (`same_desired`); otherwise only a removal can be seen done (the vector is gone).
    """
    pending = [i for i, d in enumerate(states_done) if not d]
    used: set[int] = set()
    mapping: list[int] = []
    for kind, vector in plan:
        match = next(
            (
                i
                for i in pending
                if i not in used
                and recorded[i][0] in _CONTINUES.get(kind, ())
                and (kind in _COLLECTION_ACTIONS or recorded[i][1] == vector)
            ),
            None,
        )
        if match is None:
            return None
        used.add(match)
        mapping.append(match)
    if mapping != sorted(mapping):
        return None  # the steps would run in another order than approved
    newly_done = tuple(i for i in pending if i not in used)
    if not same_desired and any(recorded[i][0] != "removeVector" for i in newly_done):
        return None
    return Continuation(tuple(mapping), newly_done)


def describe_steps(steps: Sequence[Step]) -> str:
    """`removeVector text_v1, replaceVector image_v1` (or `nothing`)."""
    shown = [f"{kind} {vector}" if vector else kind for kind, vector in steps]
    return ", ".join(shown) if shown else "nothing"


def progress(recorded: Sequence[Step], states_done: Sequence[bool]) -> str:
    """`done: ...; remaining: ...`, for status messages."""
    done = [s for s, d in zip(recorded, states_done, strict=True) if d]
    remaining = [s for s, d in zip(recorded, states_done, strict=True) if not d]
    return f"done: {describe_steps(done)}; remaining: {describe_steps(remaining)}"


def partial_report(
    result: LastReconfigure,
    recorded: Sequence[Step],
    states_done: Sequence[bool],
    live_vectors: Sequence[str] | None,
    *,
    fingerprint: str,
    time: str,
) -> LastReconfigure:
    """What an interrupted operation really did: `result` (prepared for the whole plan)
    cut down to the steps that are done."""
    done = [s for s, d in zip(recorded, states_done, strict=True) if d]
    remaining = [s for s, d in zip(recorded, states_done, strict=True) if not d]
    kinds = {kind for kind, _ in done}
    whole = bool(kinds & {"createCollection", "recreateCollection"})

    def kept(names: Sequence[str], kind: str) -> list[str]:
        if whole:
            return list(names)
        return [n for n in names if (kind, n) in done]

    return result.model_copy(
        update={
            "vectors_added": kept(result.vectors_added, "addVector"),
            "vectors_removed": kept(result.vectors_removed, "removeVector"),
            "vectors_replaced": kept(result.vectors_replaced, "replaceVector"),
            "vectors_total": list(live_vectors or []),
            "points_deleted": result.points_deleted if whole else 0,
            "collections_to_reprocess": result.collections_to_reprocess if done else [],
            "message": f"Plan {fingerprint} was interrupted: {describe_steps(done)} done, "
            f"{describe_steps(remaining)} not done.",
            "time": time,
        }
    )
