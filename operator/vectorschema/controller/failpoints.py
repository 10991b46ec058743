"""Failpoints: let a test kill the operator at an exact step, as a crash would, or count
the Qdrant calls each process makes.

`VECTORSCHEMA_FAILPOINT=exit-after:<gateway call>` (e.g. `exit-after:delete_collection`)
makes the process exit at once, without cleanup, right after that Qdrant call succeeds.
The crash-recovery e2e test uses it to prove that an interrupted destructive plan is
finished on restart. Besides each gateway call, `exit-after:write_intent` fires once the
intent record (`status.operation`) is written, and `exit-before:final_status` just before a
pass writes its final status. `VECTORSCHEMA_FAILPOINT=trace` writes one line per Qdrant call that
changes a collection (`TRACE_LINE`), so a test can tell which of two replicas acted.
Unset (always, in production), it costs one dictionary lookup.
"""

from __future__ import annotations

import os
import sys

ENV = "VECTORSCHEMA_FAILPOINT"
EXIT_CODE = 70
TRACE = "trace"
#: Written to stderr by `after` under `trace`, followed by the step's name.
TRACE_LINE = "vectorschema: failpoint trace: done "


def after(step: str) -> None:
    """Exit the process here if the failpoint names `step`; under `trace`, say it ran."""
    value = os.environ.get(ENV)
    if value is None:
        return
    if value == TRACE:
        sys.stderr.write(f"{TRACE_LINE}{step}\n")
        sys.stderr.flush()
    elif value == f"exit-after:{step}":
        sys.stderr.write(f"vectorschema: failpoint {ENV}=exit-after:{step} hit: exiting\n")
        sys.stderr.flush()
        os._exit(EXIT_CODE)


def before(step: str) -> None:
    """Exit the process here if the failpoint is `exit-before:<step>`."""
    value = os.environ.get(ENV)
    if value is not None and value == f"exit-before:{step}":
        sys.stderr.write(f"vectorschema: failpoint {ENV}={value} hit: exiting\n")
        sys.stderr.flush()
        os._exit(EXIT_CODE)
