"""Every kopf index and event-watching handler is `async def`: kopf runs a plain `def`
handler in a thread of its executor, one hop per handler per event (profiled: 15% of the
operator's samples while answering spec changes, in `ThreadPoolExecutor.submit`), and the
wake-ups they call set asyncio Events, which only the event loop's thread may set."""

from __future__ import annotations

import inspect

import kopf

import vectorschema.k8s.handlers  # noqa: F401  (registers the handlers)


def test_index_and_event_handlers_run_on_the_event_loop() -> None:
    registry = kopf.get_default_registry()
    handlers = [
        *registry._indexing.get_all_handlers(),
        *registry._watching.get_all_handlers(),
    ]
    names = {h.fn.__name__ for h in handlers}
    assert {"namespace_event", "namespaces_by_plugin", "plugin_specs"} <= names
    threaded = sorted(h.fn.__name__ for h in handlers if not inspect.iscoroutinefunction(h.fn))
    assert threaded == []
