"""Failpoints: let a test kill the operator at an exact step, as a crash would.

`VECTORSCHEMA_FAILPOINT=exit-after:<gateway call>` (e.g. `exit-after:delete_collection`)
makes the process exit at once, without cleanup, right after that Qdrant call succeeds.
The crash-recovery e2e test uses it to prove that an interrupted destructive plan is
finished on restart. Unset (always, in production), it costs one dictionary lookup.
"""

from __future__ import annotations

import os
import sys

ENV = "VECTORSCHEMA_FAILPOINT"
EXIT_CODE = 70


def after(step: str) -> None:
    """Exit the process here if the failpoint names `step`."""
    if os.environ.get(ENV) == f"exit-after:{step}":
        sys.stderr.write(f"vectorschema: failpoint {ENV}=exit-after:{step} hit: exiting\n")
        sys.stderr.flush()
        os._exit(EXIT_CODE)
