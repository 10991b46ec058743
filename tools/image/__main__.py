"""``python -m image [--force]``: build (or reuse) the operator image.

The last two lines of the output are the OCI archive's path and the image's name.
"""

from __future__ import annotations

import argparse
import sys
import time

from image.build import build_image
from image.tools import ImageError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m image", description=__doc__)
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        built = build_image(force=args.force)
    except ImageError as exc:
        print(f"image: {exc}", file=sys.stderr)
        return 1
    elapsed = time.monotonic() - started
    size = built.archive.stat().st_size / 1e6
    verb = "built" if built.built else "reused"
    print(f"image: {verb} in {elapsed:.0f} s; archive {size:.1f} MB", file=sys.stderr)
    print(built.archive)
    print(built.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
