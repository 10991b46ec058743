"""Loaded next to the operator by the cluster benchmarks (`kopf run -m
vectorschema.k8s.handlers -m bench_hooks`), never in production: counts the operator's
Qdrant calls by gateway method (reads, writes), the HTTP requests its Qdrant clients send
to a server (by method: what a server sees), and its completed reconcile passes, and serves
them as JSON on 127.0.0.1:`BENCH_HOOKS_PORT` (`GET /counts`).

With `BENCH_TRACEMALLOC=<frames>` it also traces Python allocations from its import on
(`tracemalloc`, slow: for finding where memory goes, not for timings) and serves the
largest holders of what is live now (`GET /tracemalloc?top=30&by=lineno|traceback`).

The embedded Qdrant lives inside the operator process, so its calls can only be counted
there; API requests are counted at the API server instead (its audit log).
"""

from __future__ import annotations

import functools
import gc
import os
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from typing import Any

import kopf
from aiohttp import web
from qdrant_client.http.api_client import ApiClient

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
if os.environ.get("BENCH_TRACEMALLOC"):
    tracemalloc.start(int(os.environ["BENCH_TRACEMALLOC"]))

#: Seconds spent in the garbage collector, and collections, by generation.
gc_seconds: dict[str, float] = {}
_gc_started = [0.0]


def _gc_timer(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _gc_started[0] = time.perf_counter()
    else:
        gen = f"gen{info['generation']}"
        gc_seconds[gen] = gc_seconds.get(gen, 0.0) + time.perf_counter() - _gc_started[0]
        gc_seconds[f"{gen}_collections"] = gc_seconds.get(f"{gen}_collections", 0) + 1


gc.callbacks.append(_gc_timer)

calls: Counter[str] = Counter()
http: Counter[str] = Counter()
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

_send_inner = ApiClient.send_inner


def _send_counted(self: ApiClient, request: Any) -> Any:
    parts = request.url.path.split("/")
    if len(parts) > 2 and parts[1] == "collections":
        parts[2] = "{c}"  # one key per kind of request, not per collection
    with _lock:
        http[f"{request.method} {'/'.join(parts)}"] += 1
    return _send_inner(self, request)


ApiClient.send_inner = _send_counted  # type: ignore[method-assign]


@kopf.on.startup()
async def serve_counts(memo: kopf.Memo, **_: Any) -> None:
    async def counts(_: web.Request) -> web.Response:
        passes = memo.wakeups.passes
        with _lock:
            qdrant = dict(calls)
            on_the_wire = dict(http)
        return web.json_response(
            {
                "passes": sum(passes.values()),
                "resources_passed": len(passes),
                "qdrant_reads": sum(qdrant.get(n, 0) for n in READS),
                "qdrant_writes": sum(qdrant.get(n, 0) for n in WRITES),
                "qdrant": qdrant,
                "qdrant_http": on_the_wire,
                "wakes": dict(Counter(why for (_key, why) in memo.wakeups.wakes.elements())),
                "gc": dict(gc_seconds),
            }
        )

    async def traced(request: web.Request) -> web.Response:
        if not tracemalloc.is_tracing():
            return web.Response(status=404, text="BENCH_TRACEMALLOC is not set\n")
        top = int(request.query.get("top", "30"))
        by = request.query.get("by", "lineno")
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        stats = snapshot.statistics(by)
        current, peak = tracemalloc.get_traced_memory()
        lines = [
            f"traced now {current / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB, "
            f"{len(stats)} {by}s",
            "",
        ]
        for stat in stats[:top]:
            lines.append(f"{stat.size / 2**20:8.2f} MiB {stat.count:9d} blocks")
            frames = stat.traceback.format() if by == "traceback" else [str(stat.traceback)]
            lines += [f"    {f.strip()}" for f in frames if f.strip()]
        return web.Response(text="\n".join(lines) + "\n")

    app = web.Application()
    app.router.add_get("/counts", counts)
    app.router.add_get("/tracemalloc", traced)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", int(os.environ["BENCH_HOOKS_PORT"])).start()
    memo.bench_runner = runner
