"""helm for the tests: built once from the Go module proxy (tools/helm/build.sh, cached in
~/.cache/vectorschema), and `render()` = `helm template` parsed into objects."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from tests.gotools import built

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "vectorschema"


def helm_binary() -> Path:
    """The pinned helm (built on first use, a few minutes; then cached)."""
    return built("helm")


def helm(
    *args: str, env: Mapping[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(helm_binary()), *args], capture_output=True, text=True, timeout=300, env=env
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"helm {' '.join(args)} exited with {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
    return done


def values_args(values: Mapping[str, Any]) -> list[str]:
    """`--set-json` arguments for a dict of top-level values."""
    return [arg for k, v in values.items() for arg in ("--set-json", f"{k}={json.dumps(v)}")]


def render(
    values: Mapping[str, Any] | None = None,
    *,
    release: str = "vectorschema",
    namespace: str = "vectorschema-system",
    include_crds: bool = False,
) -> list[dict[str, Any]]:
    """`helm template` of the chart with ``values``: the objects, in helm's order."""
    args = ["template", release, str(CHART), "--namespace", namespace]
    if include_crds:
        args.append("--include-crds")
    out = helm(*args, *values_args(values or {})).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in by_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}: {[d['metadata'] for d in found]}"
    return found[0]
