"""Every kopf index and event-watching handler is `async def`: kopf runs a plain `def`
handler in a thread of its executor, one hop per handler per event (profiled: 15% of the
operator's samples while answering spec changes, in `ThreadPoolExecutor.submit`), and the
wake-ups they call set asyncio Events, which only the event loop's thread may set."""

from __future__ import annotations

import asyncio
import inspect

import kopf

from vectorschema.k8s import handlers  # registers the handlers


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


def test_after_a_failed_start_the_other_handlers_add_no_error_of_their_own() -> None:
    """`configure` failed (no cluster, a refused setting) and said why: the startup and
    cleanup handlers that follow must not fail on what it did not set up (they logged
    "start_shard_lease failed: 'gate'" after the real error)."""
    memo = kopf.Memo()  # nothing set up
    for handler in (handlers.start_shard_lease, handlers.stop_shard_lease, handlers.stop_serving):
        asyncio.run(handler(memo=memo))
    handlers.shut_down(memo=memo)
