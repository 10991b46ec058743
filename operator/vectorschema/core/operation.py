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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vectorschema.api import LastReconfigure

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
