"""Loaded next to the operator by the cluster benchmarks (`kopf run -m
vectorschema.k8s.handlers -m bench_hooks`), never in production: counts the operator's
Qdrant calls by gateway method (reads, writes) and its completed reconcile passes, and
serves them as JSON on 127.0.0.1:`BENCH_HOOKS_PORT` (`GET /counts`).

The embedded Qdrant lives inside the operator process, so its calls can only be counted
there; API requests are counted at the API server instead (its audit log).
"""

from __future__ import annotations

import functools
import os
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import kopf
from aiohttp import web

from vectorschema.qdrant.client import ClientGateway

READS = ("observe", "count_with_vector")
WRITES = (
    "create_collection",
    "delete_collection",
    "create_vector",
    "delete_vector",
    "update_vector",
    "set_metadata",
)
calls: Counter[str] = Counter()
_lock = threading.Lock()


def _counted(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        with _lock:
            calls[name] += 1
        return fn(*args, **kwargs)

    return call


for _name in (*READS, *WRITES):
    setattr(ClientGateway, _name, _counted(_name, getattr(ClientGateway, _name)))


@kopf.on.startup()
async def serve_counts(memo: kopf.Memo, **_: Any) -> None:
    async def counts(_: web.Request) -> web.Response:
        passes = memo.wakeups.passes
        with _lock:
            qdrant = dict(calls)
        return web.json_response(
            {
                "passes": sum(passes.values()),
                "resources_passed": len(passes),
                "qdrant_reads": sum(qdrant.get(n, 0) for n in READS),
                "qdrant_writes": sum(qdrant.get(n, 0) for n in WRITES),
                "qdrant": qdrant,
            }
        )

    app = web.Application()
    app.router.add_get("/counts", counts)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", int(os.environ["BENCH_HOOKS_PORT"])).start()
    memo.bench_runner = runner
