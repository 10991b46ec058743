"""Every log line about a resource names it.

kopf's own lines about an object carry its reference (`k8s_ref`): the JSON format
(`kopf run --log-format=json`, python-json-logger) writes it as `object`, the text formats
as a `[namespace/name]` prefix. The operator's lines come from plain module loggers; while
a handler works on an object, `about(...)` puts the object's reference in a context
variable, and `ObjectRefFilter` (on the root logger's handlers) adds it to every record
that has none. Context variables follow `asyncio.to_thread`, so lines logged by a pass in
its worker thread are covered too.

Lines never carry a whole resource body: only the reference, and messages that name fields.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator
from typing import Any

from vectorschema.api import API_VERSION, NAMESPACE_KIND, PLUGIN_KIND

_current: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "vectorschema_object", default=None
)


def reference(
    kind: str, name: str, namespace: str | None = None, uid: str | None = None
) -> dict[str, Any]:
    """An object reference in kopf's shape (`apiVersion`, `kind`, `name`, `namespace`, `uid`)."""
    ref: dict[str, Any] = {"apiVersion": API_VERSION, "kind": kind, "name": name}
    if namespace is not None:
        ref["namespace"] = namespace
    if uid is not None:
        ref["uid"] = uid
    return ref


def namespace_ref(namespace: str, name: str, uid: str | None = None) -> dict[str, Any]:
    return reference(NAMESPACE_KIND, name, namespace, uid)


def plugin_ref(name: str, uid: str | None = None) -> dict[str, Any]:
    return reference(PLUGIN_KIND, name, None, uid)


@contextlib.contextmanager
def about(ref: dict[str, Any]) -> Iterator[None]:
    """Log lines in this block (and in threads it starts) name ``ref``."""
    token = _current.set(ref)
    try:
        yield
    finally:
        _current.reset(token)


def set_current(ref: dict[str, Any]) -> None:
    """For a task that works on one object for its whole life (a control loop)."""
    _current.set(ref)


class ObjectRefFilter(logging.Filter):
    """Adds the current object's reference to records that carry none."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "k8s_ref"):
            ref = _current.get()
            if ref is not None:
                record.k8s_ref = ref
        return True


def install() -> None:
    """Put the filter on every handler of the root logger (kopf's included); idempotent."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, ObjectRefFilter) for f in handler.filters):
            handler.addFilter(ObjectRefFilter())
