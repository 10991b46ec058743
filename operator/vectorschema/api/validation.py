"""Turn a pydantic ValidationError into one line that names the field, kubectl-style.

Used wherever user input is parsed (the operator's status, the CLI), so the same bad
manifest gets the same message: `spec.plugins[0].vectors[1]: size is required for dense
vectors`. Imports only pydantic.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError


def field_path(loc: Sequence[int | str], prefix: str = "") -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "(root)"


def describe(exc: ValidationError, prefix: str = "", limit: int = 3) -> str:
    """The first `limit` errors, each as `field.path: message`."""
    lines = []
    for err in exc.errors()[:limit]:
        msg = str(err["msg"]).removeprefix("Value error, ")
        where = field_path(err["loc"], prefix)
        lines.append(msg if where == "(root)" else f"{where}: {msg}")
    more = len(exc.errors()) - limit
    if more > 0:
        lines.append(f"... and {more} more")
    return "; ".join(lines)
