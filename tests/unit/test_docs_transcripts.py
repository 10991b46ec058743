"""The transcript parser and comparison that `tests/e2e/test_docs_examples.py` relies on:
what a page's console blocks mean, what is normalised away, and what still fails."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.docs_examples import (
    Fingerprints,
    live_command,
    matches,
    normalise,
    normalise_all,
    parse,
)

REPO = Path(__file__).resolve().parents[2]
EXECUTED = (
    "README.md",
    "docs/tutorials/first-namespace.md",
    "docs/tutorials/first-approval.md",
    "docs/tutorials/gitops.md",
    "docs/reference/webhook.md",
)

PAGE = """\
# A page

<!-- output of: make run -->
```text
$ make run
...
run: tenant-acme/catalog is Ready (7.1 s after the operator started)
```

```console
$ kubectl get vns -A
NAME   AGE
a      7s

$ kubectl apply \\
    -f x.yaml
Warning: plan 1afb1bea0f37d049 is destructive
```

```bash
echo not run
```

1. In a list:

    ```console
    $ vectorschema reconfigure a --confirm
    {"fingerprint": "1afb1bea0f37d049"}
    ```
"""


def test_a_page_is_parsed_into_commands_and_their_output(tmp_path: Path) -> None:
    path = tmp_path / "page.md"
    path.write_text(PAGE)
    page = parse(path)
    assert page.make_run == [
        "...",
        "run: tenant-acme/catalog is Ready (7.1 s after the operator started)",
    ]
    assert [s.command for s in page.steps] == [
        "kubectl get vns -A",
        "kubectl apply \\\n    -f x.yaml",
        "vectorschema reconfigure a --confirm",
    ]
    assert page.steps[0].expected == ["NAME   AGE", "a      7s"]
    assert page.steps[1].expected == ["Warning: plan 1afb1bea0f37d049 is destructive"]
    assert page.steps[2].expected == ['{"fingerprint": "1afb1bea0f37d049"}']
    assert page.steps[0].line == 11


def test_output_before_a_command_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "page.md"
    path.write_text("```console\nsome output\n$ ls\n```\n")
    with pytest.raises(ValueError, match="output before"):
        parse(path)


def test_ages_times_ports_and_durations_are_normalised() -> None:
    fps = Fingerprints()
    assert normalise("catalog   True    3   2m11s", fps) == normalise("catalog True 3 7s", fps)
    assert normalise('time: "2026-12-04T13:33:40Z"', fps) == normalise(
        'time: "2027-01-01T00:00:00Z"', fps
    )
    assert normalise("ready at https://127.0.0.1:45413 (7.1 s)", fps) == normalise(
        "ready at https://127.0.0.1:1 (12 s)", fps
    )
    assert normalise("--- /tmp/LIVE-2688387224/x\t2026-12-04 13:35:25.930775123 +0000", fps) == (
        normalise("--- /tmp/LIVE-1/x 2026-12-05 01:00:00.1 +0000", fps)
    )


def test_what_is_not_normalised_still_differs() -> None:
    fps = Fingerprints()
    assert normalise("catalog True Reconciled 3 0 7s", fps) != normalise(
        "catalog True Reconciled 2 0 7s", fps
    )
    assert normalise("2,000 points carry it", fps) != normalise("2,001 points carry it", fps)
    assert normalise("generation: 2", fps) != normalise("generation: 3", fps)


def test_fingerprints_are_numbered_so_a_repeat_must_repeat() -> None:
    page, live = Fingerprints(), Fingerprints()
    shown = normalise_all(["plan aaaaaaaaaaaaaaaa", "approve aaaaaaaaaaaaaaaa"], page)
    same = normalise_all(["plan 1111111111111111", "approve 1111111111111111"], live)
    other = normalise_all(["plan 2222222222222222", "approve 3333333333333333"], Fingerprints())
    assert shown == same
    assert shown != other


def test_a_later_command_gets_the_live_fingerprint() -> None:
    page, live = Fingerprints(), Fingerprints()
    normalise("plan aaaaaaaaaaaaaaaa", page)
    normalise("plan 1111111111111111", live)
    cmd = "kubectl annotate vns x vectorschema.dev/confirm=aaaaaaaaaaaaaaaa"
    assert live_command(cmd, page, live).endswith("=1111111111111111")


def test_an_ellipsis_stands_for_any_number_of_lines() -> None:
    assert matches(["a", "...", "d"], ["a", "b", "c", "d"])
    assert matches(["a", "...", "d"], ["a", "d"])
    assert matches(["...", "c"], ["a", "b", "c"])
    assert matches(["a", "..."], ["a", "b"])
    assert not matches(["a", "...", "d"], ["a", "b", "c"])
    assert not matches(["a", "b"], ["a", "b", "c"])
    assert not matches(["a", "b", "c"], ["a", "b"])


@pytest.mark.parametrize("name", EXECUTED)
def test_every_executed_page_has_transcripts(name: str) -> None:
    """The pages the e2e test runs parse, and each has commands to run."""
    page = parse(REPO / name)
    assert page.steps, f"{name} has no console transcript"
    for step in page.steps:
        assert step.command.strip(), f"{name}:{step.line}: an empty command"


def test_every_tutorial_is_executed() -> None:
    tutorials = {
        str(p.relative_to(REPO))
        for p in (REPO / "docs" / "tutorials").glob("*.md")
        if p.name != "index.md"
    }
    assert tutorials <= set(EXECUTED), tutorials - set(EXECUTED)
