"""The failpoints a test can switch on by environment variable (off in production)."""

from __future__ import annotations

import pytest

from vectorschema.controller import failpoints


def test_unset_does_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(failpoints.ENV, raising=False)
    failpoints.after("delete_collection")
    assert capsys.readouterr().err == ""


def test_trace_writes_one_line_per_step(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(failpoints.ENV, failpoints.TRACE)
    failpoints.after("create_vector")
    failpoints.after("delete_vector")
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"{failpoints.TRACE_LINE}create_vector",
        f"{failpoints.TRACE_LINE}delete_vector",
    ]


def test_exit_after_another_step_does_not_exit(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(failpoints.ENV, "exit-after:delete_collection")
    failpoints.after("create_collection")  # still running: only the named step exits
    assert capsys.readouterr().err == ""


def test_exit_before_another_step_does_not_exit(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(failpoints.ENV, "exit-before:final_status")
    failpoints.before("something_else")
    failpoints.after("final_status")  # exit-before is not exit-after
    assert capsys.readouterr().err == ""
