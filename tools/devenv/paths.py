"""Where things are: the repository, the Go build script, the default state dir.

The Go wrapper modules and ``build.sh`` stay in ``tools/controlplane/``, where the
Makefile's ``controlplane`` target and the docs point.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parent.parent
REPO = TOOLS.parent
BUILD_SCRIPT = TOOLS / "controlplane" / "build.sh"
DEFAULT_STATE_DIR = REPO / ".state" / "cluster"


def down_command(state_dir: Path) -> str:
    """The shell command that stops the detached control plane of ``state_dir``."""
    return (
        f"PYTHONPATH={shlex.quote(str(TOOLS))} {shlex.quote(sys.executable)} -m devenv down "
        f"--state-dir {shlex.quote(str(state_dir))}"
    )
