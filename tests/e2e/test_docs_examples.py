"""The console examples of the tutorials and the README are run, and their output is what
the pages show.

For each page, `make run` (`tools/run.py`) starts on a fresh local control plane in a
temporary directory, exactly as a reader starts it: CRDs, the samples, the operator with
the embedded Qdrant and the admission webhook. Then every `$ ` command of the page's
```` ```console ```` blocks runs in order with bash, from the repository root, pointed at
that cluster, and its output (stdout and stderr together) is compared with the page after
normalising ages, times, ports, pids, durations and fingerprints (`tests/docs_examples.py`).
A block marked `<!-- output of: make run -->` is compared with what `make run` printed.

A read-only command (`kubectl get`, `kubectl describe`) is re-run until its output matches
or 30 s pass, because the operator works asynchronously; any other command runs once.
A stale page fails here, naming the page, the line and the difference.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.docs_examples import (
    Fingerprints,
    Page,
    Step,
    live_command,
    matches,
    normalise_all,
    parse,
)

from devenv import parent_death_preexec

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PAGES = (
    "README.md",
    "docs/tutorials/first-namespace.md",
    "docs/tutorials/first-approval.md",
    "docs/tutorials/gitops.md",
    "docs/reference/webhook.md",
)
READY_LINE = "Ctrl-C here stops"
START_TIMEOUT = float(os.environ.get("VECTORSCHEMA_E2E_START_TIMEOUT", "90")) + 180
COMMAND_TIMEOUT = 120.0
SETTLE_SECONDS = 30.0
READ_ONLY = ("kubectl get ", "kubectl describe ")
LOG_LINES = 40


@dataclass
class MakeRun:
    """`tools/run.py` running in `home`; its output so far in `lines`."""

    proc: subprocess.Popen[str]
    home: Path
    lines: list[str]

    @property
    def kubeconfig(self) -> Path:
        return self.home / ".state" / "run-cluster" / "admin.kubeconfig"


def _read(proc: subprocess.Popen[str], out: queue.Queue[str | None]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        out.put(line.rstrip("\n"))
    out.put(None)


@contextlib.contextmanager
def make_run(home: Path) -> Iterator[MakeRun]:
    """`make run`'s program with its state in `home`: `.state/` and `.data/qdrant` there,
    as they are in a reader's clone; `--local-cluster`, so that no kubeconfig of this
    machine is used. Stopped with SIGTERM (as Ctrl-C would), then killed if it hangs."""
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "QDRANT_URL")}
    env.update(QDRANT_PATH=".data/qdrant", PYTHONUNBUFFERED="1")
    env.pop("VECTORSCHEMA_WEBHOOK_PORT", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "tools" / "run.py"),
            "--local-cluster",
            "--state-dir",
            ".state",
        ],
        cwd=home,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=parent_death_preexec(),
    )
    out: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_read, args=(proc, out), daemon=True).start()
    run = MakeRun(proc, home, [])
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not any(line.startswith(READY_LINE) for line in run.lines):
            try:
                line = out.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(
                    f"make run was not ready after {START_TIMEOUT:.0f} s:\n" + "\n".join(run.lines)
                )
            if line is None:
                pytest.fail(f"make run exited with {proc.wait()}:\n" + "\n".join(run.lines))
            run.lines.append(line)
        yield run
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)


def shell(command: str, kubeconfig: Path) -> list[str]:
    env = dict(os.environ, KUBECONFIG=str(kubeconfig))
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    done = subprocess.run(
        ["bash", "-c", command],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )
    lines = done.stdout.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def difference(
    where: str, command: str, expected: list[str], actual: list[str], log: Path | None = None
) -> str:
    diff = "\n".join(difflib.unified_diff(expected, actual, "the page", "the run", lineterm=""))
    tail = ""
    if log is not None and log.is_file():
        tail = "\nlast lines of the operator's log:\n" + "\n".join(
            log.read_text(errors="replace").splitlines()[-LOG_LINES:]
        )
    return (
        f"{where}: the output of `{command}` is not what the page shows "
        f"(normalised; `...` matches any lines):\n{diff}{tail}"
    )


def run_step(
    page: Page, step: Step, kubeconfig: Path, page_fps: Fingerprints, live_fps: Fingerprints
) -> None:
    expected = normalise_all(step.expected, page_fps)
    command = live_command(step.command, page_fps, live_fps)
    retry = command.startswith(READ_ONLY)
    deadline = time.monotonic() + (SETTLE_SECONDS if retry else 0)
    while True:
        trial = live_fps.copy()
        actual = normalise_all(shell(command, kubeconfig), trial)
        if matches(expected, actual) or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    live_fps.order = trial.order
    where = f"{page.path.relative_to(REPO)}:{step.line}"
    log = kubeconfig.parent.parent / "operator.log"
    assert matches(expected, actual), difference(where, command, expected, actual, log)


@pytest.mark.parametrize("name", PAGES)
def test_the_page_shows_what_really_happens(name: str, tmp_path: Path) -> None:
    page = parse(REPO / name)
    assert page.steps, f"{name} has no console transcript to run"
    page_fps, live_fps = Fingerprints(), Fingerprints()
    with make_run(tmp_path) as run:
        if page.make_run is not None:
            expected = normalise_all(page.make_run, page_fps)
            actual = normalise_all(run.lines, live_fps)
            where = f"{name}:{page.make_run_line}"
            assert matches(expected, actual), difference(where, "make run", expected, actual)
        for step in page.steps:
            run_step(page, step, run.kubeconfig, page_fps, live_fps)
