"""Writing a Namespace's status: only what changed, only onto the version it read.

The Kubernetes calls are behind `NamespaceStore` (the kopf layer's kube adapter implements
it; tests use an in-memory one), so the rules here are unit-tested: the merge patch, the
no-op when nothing changed, the conflict handling.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from pydantic import ValidationError

from vectorschema.api import NamespaceStatus
from vectorschema.controller import failpoints
from vectorschema.core.policy import SCRUBBER


class NotFound(Exception):
    """The object does not exist (HTTP 404)."""


class Conflict(Exception):
    """The object changed since it was read (HTTP 409): read it again and redo the work."""


class NamespaceStore(Protocol):
    """The Namespace-resource calls a pass makes."""

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        """The object; raises NotFound."""
        ...

    def patch_status(
        self, namespace: str, name: str, patch: dict[str, Any], resource_version: str | None
    ) -> str:
        """Merge-patch the status onto that version (if given); raises Conflict. Returns the
        new resourceVersion."""
        ...

    def set_annotation(
        self,
        namespace: str,
        name: str,
        key: str,
        value: str | None,
        resource_version: str | None = None,
    ) -> str:
        """Set (or, with None, remove) one annotation, onto that version (if given);
        raises Conflict. Returns the new resourceVersion."""
        ...


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch turning `old` into `new` at the top level (None deletes)."""
    patch: dict[str, Any] = {k: None for k in old if k not in new}
    patch.update(new)
    return patch


def scrubbed(value: Any) -> Any:
    """`value` with every known secret value scrubbed from every string in it."""
    if isinstance(value, str):
        return SCRUBBER.scrub(value)
    if isinstance(value, Mapping):
        return {k: scrubbed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrubbed(v) for v in value]
    return value


def parse_status(body: Mapping[str, Any]) -> NamespaceStatus:
    """The object's status; an unreadable one (hand-edited) is rebuilt from scratch."""
    try:
        return NamespaceStatus.model_validate(body.get("status") or {})
    except ValidationError:
        return NamespaceStatus()


class StatusWriter:
    """Writes one Namespace's status: only what changed, only onto the version it read.

    The intent record is written with the resourceVersion of the object the pass started
    from: if anything changed since, it fails (Conflict) before any destructive Qdrant
    call, and the pass is re-run on fresh data. The final status reports what this pass
    did to Qdrant, which stays true whatever else changed: on a conflict it is re-applied
    onto a freshly read object.
    """

    def __init__(
        self, store: NamespaceStore, namespace: str, name: str, body: Mapping[str, Any]
    ) -> None:
        self.store = store
        self.namespace, self.name = namespace, name
        self.written: dict[str, Any] = dict(body.get("status") or {})
        self.version: str | None = body.get("metadata", {}).get("resourceVersion")

    def intent(self, status: NamespaceStatus) -> None:
        """Write `status` onto the version last read or written; raises Conflict."""
        self._write(scrubbed(status.to_wire()))
        failpoints.after("write_intent")

    def remove_annotation(self, key: str) -> None:
        """Remove one annotation, onto the version last read or written (the one-shot
        approval is consumed before acting: if this fails, nothing runs)."""
        self.version = self.store.set_annotation(self.namespace, self.name, key, None, self.version)

    def final(self, status: NamespaceStatus, attempts: int = 3) -> None:
        new = scrubbed(status.to_wire())
        for attempt in range(attempts):
            try:
                self._write(new)
                return
            except Conflict:
                if attempt == attempts - 1:
                    raise
                fresh = self.store.get(self.namespace, self.name)
                self.written = dict(fresh.get("status") or {})
                self.version = fresh["metadata"]["resourceVersion"]

    def _write(self, new: dict[str, Any]) -> None:
        if new == self.written:
            return
        patch = merge_patch(self.written, new)
        self.version = self.store.patch_status(self.namespace, self.name, patch, self.version)
        self.written = new
