"""``python -m devenv up|status|down`` (with ``tools`` on the import path)."""

import sys

from devenv.cli import main

sys.exit(main())
