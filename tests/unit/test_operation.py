"""Resuming a recorded operation (core/operation.py): which steps remain, and whether a
fresh plan continues exactly them."""

from __future__ import annotations

from typing import Any

import pytest

from vectorschema.api import APPLIED_METADATA_KEY, OPERATION_METADATA_KEY
from vectorschema.core.operation import (
    Continuation,
    applied_plans,
    continuation,
    describe_steps,
    finished_metadata,
    intent_metadata,
    progress,
    recorded_intent,
)

REMOVE_TEXT = ("removeVector", "text_v")
REPLACE_IMAGE = ("replaceVector", "image_v")
RECREATE = ("recreateCollection", None)


def test_a_plan_of_exactly_the_remaining_steps_continues_them() -> None:
    recorded = [REMOVE_TEXT, REPLACE_IMAGE]
    assert continuation(recorded, [True, False], [REPLACE_IMAGE]) == Continuation((1,), ())
    assert continuation(recorded, [False, False], [REMOVE_TEXT, REPLACE_IMAGE]) == (
        Continuation((0, 1), ())
    )


def test_a_step_stopped_half_way_continues_as_its_second_half() -> None:
    # the replace deleted image_v and crashed before creating it again
    recorded = [REMOVE_TEXT, REPLACE_IMAGE]
    got = continuation(recorded, [True, False], [("addVector", "image_v")])
    assert got == Continuation((1,), ())
    # the recreate dropped the collection and crashed before creating it
    assert continuation([RECREATE], [False], [("createCollection", None)]) == Continuation((0,), ())


def test_steps_the_world_already_shows_done_are_done() -> None:
    # crashed after removing text_v, before the status said so
    recorded = [REMOVE_TEXT, REPLACE_IMAGE]
    assert continuation(recorded, [False, False], [REPLACE_IMAGE]) == Continuation((1,), (0,))
    assert continuation(recorded, [False, False], []) == Continuation((), (0, 1))


def test_a_plan_that_does_more_or_else_does_not_continue() -> None:
    recorded = [REMOVE_TEXT, REPLACE_IMAGE]
    assert continuation(recorded, [True, False], [REMOVE_TEXT]) is None  # done already
    assert continuation(recorded, [True, False], [("removeVector", "image_v")]) is None
    assert continuation(recorded, [True, False], [REPLACE_IMAGE, ("addVector", "x")]) is None
    assert continuation(recorded, [False, False], [REPLACE_IMAGE, REMOVE_TEXT]) is None
    assert continuation([RECREATE], [False], [REMOVE_TEXT]) is None


def test_progress_says_what_is_done_and_what_remains() -> None:
    recorded = [REMOVE_TEXT, REPLACE_IMAGE]
    assert progress(recorded, [True, False]) == (
        "done: removeVector text_v; remaining: replaceVector image_v"
    )
    assert progress([RECREATE], [False]) == "done: nothing; remaining: recreateCollection"
    assert describe_steps([]) == "nothing"


def test_with_another_desired_schema_only_a_removal_can_be_seen_done() -> None:
    recorded = [REMOVE_TEXT, REPLACE_IMAGE]
    assert continuation(recorded, [False, True], [], same_desired=False) == Continuation((), (0,))
    # "nothing left for image_v" may just mean the spec changed back: not done
    assert continuation(recorded, [True, False], [], same_desired=False) is None


# --- the operator's own record (issue 17) ---------------------------------------------------

RECORD = {
    "uid": "uid-1",
    "plan": "0123456789abcdef",
    "desired": "fedcba9876543210",
    "approvedBy": "confirmPlan",
    "generation": 3,
    "steps": [["removeVector", "text_v"], ["recreateCollection", None]],
    "connection": "embedded",
    "started": "2026-01-01T00:00:00Z",
}


def test_a_record_round_trips_through_metadata() -> None:
    intent = recorded_intent({OPERATION_METADATA_KEY: RECORD}, "uid-1")
    assert intent is not None
    assert intent.steps == (("removeVector", "text_v"), ("recreateCollection", None))
    assert intent_metadata(intent) == {OPERATION_METADATA_KEY: RECORD}


@pytest.mark.parametrize(
    "broken",
    [
        {"uid": "uid-2"},  # another resource's
        {"approvedBy": "status"},
        {"plan": "not-a-fingerprint"},
        {"desired": None},
        {"generation": "3"},
        {"generation": True},
        {"steps": []},
        {"steps": [["removeVector"]]},
        {"steps": [["removeVector", 7]]},
        {"steps": [["dropEverything", None]]},
        {"steps": "removeVector text_v"},
        {"connection": None},
    ],
)
def test_anything_but_the_operators_record_is_no_record(broken: dict[str, Any]) -> None:
    assert recorded_intent({OPERATION_METADATA_KEY: {**RECORD, **broken}}, "uid-1") is None
    assert recorded_intent({OPERATION_METADATA_KEY: "a string"}, "uid-1") is None
    assert recorded_intent({}, "uid-1") is None


def test_spent_approvals_read_back_only_fingerprints_and_finishing_spends_the_plan() -> None:
    metadata = {APPLIED_METADATA_KEY: ["0123456789abcdef", 7, "junk", "fedcba9876543210"]}
    assert applied_plans(metadata) == ["0123456789abcdef", "fedcba9876543210"]
    assert applied_plans({APPLIED_METADATA_KEY: "0123456789abcdef"}) == []
    done = finished_metadata("1111111111111111", applied_plans(metadata))
    assert done == {
        OPERATION_METADATA_KEY: None,
        APPLIED_METADATA_KEY: ["1111111111111111", "0123456789abcdef", "fedcba9876543210"],
    }
