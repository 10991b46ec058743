"""The console transcripts of the docs, as data: parse, normalise, compare.

`tests/e2e/test_docs_examples.py` runs the transcripts of the tutorials and the README
against `make run`; this module is the pure part, unit-tested in
`tests/unit/test_docs_transcripts.py`.

A transcript is a ```` ```console ```` block: each `$ ` line is a command (a line ending
in `\\` continues on the next), and the lines under it, up to the next command, are its
output. A line `...` stands for any number of lines. A ```` ```text ```` block right after
the comment `<!-- output of: make run -->` is what `make run` prints (its first line is
`$ make run`).

Both sides are normalised before they are compared: whitespace runs, ages (`7s`,
`2m15s`), timestamps, loopback ports, pids, durations, `kubectl diff`'s temporary paths,
resourceVersions and plan fingerprints (numbered in order of first appearance, so a page
that repeats a fingerprint must see the same one repeated).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

MAKE_RUN_MARK = "<!-- output of: make run -->"
ELLIPSIS = "..."
FINGERPRINT = re.compile(r"\b[0-9a-f]{16}\b")
AGE = re.compile(r"^(?=.*[smhd]$)(\d+d)?(\d+h)?(\d+m)?(\d+s)?$")
RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"), "<time>"),
    (re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)? [+-]\d{4}"), "<time>"),
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:<port>"),
    (re.compile(r"\bpid \d+"), "pid <pid>"),
    (re.compile(r"\(\d+(\.\d+)? s\b"), "(<n> s"),
    (re.compile(r"\bafter \d+(\.\d+)? s\b"), "after <n> s"),
    (re.compile(r"/tmp/(LIVE|MERGED)-\d+"), r"/tmp/\1-<n>"),
    (re.compile(r'resourceVersion: "\d+"'), 'resourceVersion: "<n>"'),
    (re.compile(r"Resource Version: \d+"), "Resource Version: <n>"),
    (re.compile(r"none reachable \(.*\); starting"), "none reachable (<why>); starting"),
)


@dataclass
class Step:
    """One command of a transcript and the output the page shows for it."""

    command: str
    expected: list[str]
    line: int  # 1-based line of the command in the page


@dataclass
class Page:
    path: Path
    steps: list[Step] = field(default_factory=list)
    make_run: list[str] | None = None  # the `make run` output the page shows, if any
    make_run_line: int = 0


def _fences(lines: list[str]) -> Iterable[tuple[int, str, list[str]]]:
    """(line index of the opening fence, its info string, body lines) of each fenced block."""
    i = 0
    while i < len(lines):
        match = re.match(r"^(\s*)(`{3,})\s*([^\s`]*)", lines[i])
        if not match:
            i += 1
            continue
        indent, ticks, info = match.group(1), match.group(2), match.group(3)
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(ticks):
            text = lines[j]
            body.append(text[len(indent) :] if text.startswith(indent) else text.lstrip())
            j += 1
        yield i, info, body
        i = j + 1


def _trim(lines: list[str]) -> list[str]:
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return lines


def parse(path: Path) -> Page:
    lines = path.read_text().splitlines()
    page = Page(path)
    for start, info, body in _fences(lines):
        before = lines[start - 1].strip() if start > 0 else ""
        if info == "text" and before == MAKE_RUN_MARK:
            if not body or body[0].strip() != "$ make run":
                raise ValueError(f"{path}:{start + 2}: a make run block starts with `$ make run`")
            page.make_run, page.make_run_line = _trim(body[1:]), start + 2
            continue
        if info != "console":
            continue
        step: Step | None = None
        k = 0
        while k < len(body):
            text = body[k]
            if text.startswith("$ "):
                if step is not None:
                    step.expected = _trim(step.expected)
                    page.steps.append(step)
                command, first = text[2:], start + 2 + k
                while command.endswith("\\") and k + 1 < len(body):
                    k += 1
                    command = command + "\n" + body[k]  # bash reads the continuation
                step = Step(command, [], first)
            elif step is None:
                raise ValueError(f"{path}:{start + 2 + k}: output before any `$ ` command")
            else:
                step.expected.append(text)
            k += 1
        if step is not None:
            step.expected = _trim(step.expected)
            page.steps.append(step)
    return page


class Fingerprints:
    """Plan fingerprints of one side (the page, or what really ran), numbered in order of
    first appearance."""

    def __init__(self) -> None:
        self.order: dict[str, int] = {}

    def copy(self) -> Fingerprints:
        other = Fingerprints()
        other.order = dict(self.order)
        return other

    def number(self, fingerprint: str) -> int:
        return self.order.setdefault(fingerprint, len(self.order) + 1)

    def by_number(self, n: int) -> str | None:
        return next((fp for fp, i in self.order.items() if i == n), None)


def normalise(line: str, fingerprints: Fingerprints) -> str:
    for pattern, repl in RULES:
        line = pattern.sub(repl, line)
    line = FINGERPRINT.sub(lambda m: f"<plan-{fingerprints.number(m.group(0))}>", line)
    return " ".join("<age>" if AGE.match(tok) else tok for tok in line.split())


def normalise_all(lines: list[str], fingerprints: Fingerprints) -> list[str]:
    """Lines normalised; an expected `...` stays as it is."""
    return [ELLIPSIS if ln.strip() == ELLIPSIS else normalise(ln, fingerprints) for ln in lines]


def matches(expected: list[str], actual: list[str]) -> bool:
    """Line by line, where an expected `...` matches any number of lines (none too)."""
    memo: dict[tuple[int, int], bool] = {}

    def at(i: int, j: int) -> bool:
        key = (i, j)
        if key not in memo:
            if i == len(expected):
                memo[key] = j == len(actual)
            elif expected[i] == ELLIPSIS:
                memo[key] = any(at(i + 1, k) for k in range(j, len(actual) + 1))
            else:
                memo[key] = j < len(actual) and expected[i] == actual[j] and at(i + 1, j + 1)
        return memo[key]

    return at(0, 0)


def live_command(command: str, page_fps: Fingerprints, live_fps: Fingerprints) -> str:
    """The command with each fingerprint the page showed earlier replaced by the one that
    really appeared at the same place."""

    def swap(match: re.Match[str]) -> str:
        number = page_fps.order.get(match.group(0))
        live = live_fps.by_number(number) if number is not None else None
        return live or match.group(0)

    return FINGERPRINT.sub(swap, command)
