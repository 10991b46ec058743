"""The Go tools the tests run (helm, kstatus, the Argo CD health harness): each built by its
own tools/<name>/build.sh from the Go module proxy into ~/.cache/vectorschema, once."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@functools.cache
def built(name: str) -> Path:
    """The binary tools/<name>/build.sh prints (building it on first use, minutes at most)."""
    done = subprocess.run(
        ["bash", str(REPO / "tools" / name / "build.sh")],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip().splitlines()[-1])
