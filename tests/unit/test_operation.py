"""Resuming a recorded operation (core/operation.py): which steps remain, and whether a
fresh plan continues exactly them."""

from __future__ import annotations

from vectorschema.core.operation import Continuation, continuation, describe_steps, progress

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
