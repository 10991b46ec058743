"""A Plugin's status: whether its definition is valid, and which vectors it brings.

Pure: `plugin_status` computes the new status from the object, `plugin_status_patch` the
merge patch the kopf layer writes, or None when nothing changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from vectorschema.api import PluginSpec, PluginStatus, describe
from vectorschema.controller.status_writer import merge_patch


def plugin_status(body: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """The status the Plugin `body` should have (wire form)."""
    generation = body.get("metadata", {}).get("generation")
    try:
        status = PluginStatus.model_validate(body.get("status") or {})
    except ValidationError:
        status = PluginStatus()  # unreadable (hand-edited): rebuilt
    try:
        spec = PluginSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        status.set_invalid(describe(exc, "spec"), generation=generation, now=now)
    else:
        status.set_valid([v.name for v in spec.vectors], generation=generation, now=now)
    return status.to_wire()


def plugin_status_patch(body: Mapping[str, Any], now: datetime) -> dict[str, Any] | None:
    """The merge patch that brings the Plugin's status up to date; None if it is."""
    old = body.get("status") or {}
    new = plugin_status(body, now)
    return None if new == old else merge_patch(old, new)
