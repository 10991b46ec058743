"""vectorschema benchmarks: ratios against a baseline measured in the same run.

Real code, real Qdrant, no cluster: qdrant-client's local mode on disk under a temporary
directory, and `vectorschema.controller.reconcile.reconcile()` called directly with a
`NamespaceResource`, the plugins, `connect=lambda: gateway` and a no-op intent writer.

a. Adding a vector to a collection of N points: `Auto` in place versus the seed's way
   (`Recreate`: drop, recreate, re-upsert all N points). Baseline: the in-place time.
b. A no-change resync (one reconcile pass with nothing to do) versus one raw
   `get_collection` call; plus the Qdrant calls such a pass makes (1 read, 0 writes).
c. `make_plan` for 64 vectors with a few differences versus `json.dumps` of the same
   schema.

Machines are small and noisy: every figure is the median of several repeats, and the
figures to compare across machines are the ratios. Speed targets live here, never in the
tests. Usage: `make bench`, or `.venv/bin/python bench/run.py [--points N] [--repeats R]`.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from vectorschema.api import (
    ConditionStatus,
    NamespaceResource,
    NamespaceStatus,
    PluginSpec,
    Strategy,
    VectorSpec,
)
from vectorschema.controller.reconcile import reconcile
from vectorschema.controller.results import Result
from vectorschema.core.planning import make_plan
from vectorschema.core.schema import (
    Capabilities,
    CollectionSettings,
    DesiredSchema,
    ObservedCollection,
    VectorDef,
    vector_def_from_spec,
)
from vectorschema.qdrant.client import ClientGateway
from vectorschema.qdrant.protocol import QdrantGateway

HERE = Path(__file__).resolve().parent
NOW = datetime(2026, 1, 1, tzinfo=UTC)
KUBE_NS = "bench"
UPSERT_BATCH = 500

# The seed's vectors: the text plugin's, then the image plugin's (the vector being added).
TEXT = VectorSpec(name="multilingual_e5_large_instruct_v1", size=1024, distance="Cosine")
IMAGE = VectorSpec(name="fashionsiglip_v1_embedding", size=768, distance="Cosine")
PLUGINS = {"text": PluginSpec(vectors=[TEXT]), "image": PluginSpec(vectors=[IMAGE])}

# Qdrant client calls, by what they do to the store.
CLIENT_READS = frozenset(
    {
        "get_collection",
        "get_collections",
        "get_aliases",
        "collection_exists",
        "info",
        "count",
        "scroll",
    }
)
CLIENT_WRITES = frozenset(
    {
        "create_collection",
        "delete_collection",
        "recreate_collection",
        "create_vector_name",
        "delete_vector_name",
        "update_collection",
        "upsert",
        "delete",
    }
)
GATEWAY_READS = frozenset({"observe", "count_with_vector"})
GATEWAY_WRITES = frozenset(
    {
        "create_collection",
        "delete_collection",
        "create_vector",
        "delete_vector",
        "update_vector",
        "set_metadata",
    }
)


# --- counting proxies -----------------------------------------------------------------


class Counting:
    """Delegates every attribute to `target`, counting calls of its methods by name."""

    def __init__(self, target: Any) -> None:
        self._target = target
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr
        calls = self.calls

        def call(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return attr(*args, **kwargs)

        return call


# --- helpers --------------------------------------------------------------------------


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def paired_ratio(measured: Sequence[float], baseline: Sequence[float]) -> float:
    """Median of the per-repeat ratios: each pair ran back to back, so a noisy moment
    of the machine slows both sides of a pair instead of one side of the whole ratio."""
    return median([m / b for m, b in zip(measured, baseline, strict=True)])


def resource(
    name: str,
    plugins: Sequence[str],
    *,
    strategy: Strategy = Strategy.AUTO,
    status: NamespaceStatus | None = None,
    generation: int = 1,
) -> NamespaceResource:
    return NamespaceResource.model_validate(
        {
            "metadata": {
                "name": name,
                "namespace": KUBE_NS,
                "uid": f"uid-{name}",
                "generation": generation,
            },
            "spec": {
                "plugins": [{"name": p} for p in plugins],
                "collections": [{"id": f"col_{p}", "plugins": [p]} for p in plugins],
                "strategy": strategy.value,
                "confirm": strategy is Strategy.RECREATE,  # the seed's confirm: true
            },
            "status": status,
        }
    )


def reconcile_once(gateway: QdrantGateway, res: NamespaceResource) -> Result:
    result = reconcile(res, PLUGINS, lambda: gateway, now=NOW, write_intent=lambda s: None)
    ready = result.status.condition("Ready")
    if ready is None or ready.status is not ConditionStatus.TRUE:
        raise SystemExit(f"bench: {res.owner_id} did not become Ready: {result.status}")
    return result


def next_generation(
    res: NamespaceResource, result: Result, plugins: Sequence[str]
) -> NamespaceResource:
    return resource(
        res.metadata.name,
        plugins,
        strategy=res.spec.strategy,
        status=result.status,
        generation=(res.metadata.generation or 1) + 1,
    )


def make_points(n: int, seed: int = 0) -> list[list[qm.PointStruct]]:
    """N points holding the text vector and a payload, in upsert batches (built once)."""
    rng = np.random.default_rng(seed)
    vectors = rng.random((n, TEXT.size or 0), dtype=np.float32)
    points = [
        qm.PointStruct(
            id=i,
            vector={TEXT.name: vectors[i].tolist()},
            payload={"doc": f"doc-{i}", "n": i, "lang": "en"},
        )
        for i in range(n)
    ]
    return [points[i : i + UPSERT_BATCH] for i in range(0, n, UPSERT_BATCH)]


def upsert(
    client: QdrantClient, collection: str, batches: Sequence[Sequence[qm.PointStruct]]
) -> None:
    for batch in batches:
        client.upsert(collection, list(batch), wait=True)


def points_in(gateway: ClientGateway, collection: str) -> int:
    observed = gateway.observe(collection)
    return observed.points_count if observed is not None else -1


def drop(gateway: ClientGateway, collection: str) -> None:
    gateway.delete_collection(collection)


# --- a. adding a vector ---------------------------------------------------------------


def bench_add_vector(
    gateway: ClientGateway, client: QdrantClient, n: int, repeats: int, log: Callable[[str], None]
) -> dict[str, Any]:
    batches = make_points(n)
    in_place: list[float] = []
    recreate_schema: list[float] = []
    reingest: list[float] = []
    kept_in_place: list[int] = []
    kept_recreate: list[int] = []
    for r in range(repeats):
        # Auto: the collection of N points gets the image vector in place.
        res = resource(f"auto-{r}", ["text"])
        created = reconcile_once(gateway, res)
        upsert(client, res.collection_name, batches)
        change = next_generation(res, created, ["text", "image"])
        t0 = time.perf_counter()
        done = reconcile_once(gateway, change)
        in_place.append(time.perf_counter() - t0)
        kept_in_place.append(points_in(gateway, res.collection_name))
        assert done.status.last_reconfigure is not None
        assert done.status.last_reconfigure.points_deleted == 0
        assert done.status.vectors == [TEXT.name, IMAGE.name]
        drop(gateway, res.collection_name)

        # Recreate (the seed): drop and recreate with both vectors, then re-upsert all N.
        res = resource(f"recreate-{r}", ["text"], strategy=Strategy.RECREATE)
        created = reconcile_once(gateway, res)
        upsert(client, res.collection_name, batches)
        change = next_generation(res, created, ["text", "image"])
        t0 = time.perf_counter()
        done = reconcile_once(gateway, change)
        t1 = time.perf_counter()
        kept_recreate.append(points_in(gateway, res.collection_name))
        t2 = time.perf_counter()
        upsert(client, res.collection_name, batches)
        t3 = time.perf_counter()
        recreate_schema.append(t1 - t0)
        reingest.append(t3 - t2)
        assert done.status.last_reconfigure is not None
        assert done.status.last_reconfigure.points_deleted == n
        assert points_in(gateway, res.collection_name) == n
        drop(gateway, res.collection_name)
        log(
            f"  a. repeat {r + 1}/{repeats}: in place {in_place[-1] * 1e3:.1f} ms, "
            f"recreate {recreate_schema[-1] * 1e3:.1f} ms + re-upsert {reingest[-1] * 1e3:.0f} ms"
        )
    totals = [a + b for a, b in zip(recreate_schema, reingest, strict=True)]
    return {
        "points": n,
        "repeats": repeats,
        "in_place_s": median(in_place),
        "recreate_s": median(recreate_schema),
        "reingest_s": median(reingest),
        "recreate_plus_reingest_s": median(totals),
        "ratio": paired_ratio(totals, in_place),
        "points_kept_in_place": min(kept_in_place),
        "points_kept_recreate": max(kept_recreate),
        "samples": {
            "in_place_s": in_place,
            "recreate_s": recreate_schema,
            "reingest_s": reingest,
        },
    }


# --- b. no-change resync --------------------------------------------------------------


def bench_resync(
    gateway: ClientGateway,
    client: Counting,
    n: int,
    passes: int,
    repeats: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    raw = cast(QdrantClient, client)
    res = resource("resync", ["text"])
    created = reconcile_once(gateway, res)
    upsert(raw, res.collection_name, make_points(n, seed=1))
    res = next_generation(res, created, ["text", "image"])
    res = res.model_copy(update={"status": reconcile_once(gateway, res).status})  # next pass
    collection = res.collection_name
    counting_gateway = Counting(gateway)
    as_gateway = cast(QdrantGateway, counting_gateway)

    # One pass, counted: calls to the gateway and to the Qdrant client underneath.
    gateway.capabilities()  # cached per gateway after the first call (one `info`)
    client.calls.clear()
    result = reconcile(res, PLUGINS, lambda: as_gateway, now=NOW, write_intent=lambda s: None)
    gateway_calls = dict(counting_gateway.calls)
    client_calls = dict(client.calls)
    unchanged = result.status == res.status and not result.events

    pass_s: list[float] = []
    get_s: list[float] = []
    for r in range(repeats):  # interleaved, so both sides see the same noise
        t0 = time.perf_counter()
        for _ in range(passes):
            raw.get_collection(collection)
        get_s.append((time.perf_counter() - t0) / passes)
        t0 = time.perf_counter()
        for _ in range(passes):
            reconcile(res, PLUGINS, lambda: gateway, now=NOW, write_intent=lambda s: None)
        pass_s.append((time.perf_counter() - t0) / passes)
        log(
            f"  b. repeat {r + 1}/{repeats}: pass {pass_s[-1] * 1e6:.0f} us, "
            f"get_collection {get_s[-1] * 1e6:.0f} us"
        )
    drop(gateway, collection)
    return {
        "points": n,
        "passes_per_repeat": passes,
        "repeats": repeats,
        "pass_s": median(pass_s),
        "get_collection_s": median(get_s),
        "ratio": paired_ratio(pass_s, get_s),
        "gateway_calls_per_pass": gateway_calls,
        "gateway_reads_per_pass": sum(v for k, v in gateway_calls.items() if k in GATEWAY_READS),
        "gateway_writes_per_pass": sum(v for k, v in gateway_calls.items() if k in GATEWAY_WRITES),
        "qdrant_calls_per_pass": client_calls,
        "qdrant_reads_per_pass": sum(v for k, v in client_calls.items() if k in CLIENT_READS),
        "qdrant_writes_per_pass": sum(v for k, v in client_calls.items() if k in CLIENT_WRITES),
        "qdrant_other_calls_per_pass": sum(
            v for k, v in client_calls.items() if k not in CLIENT_READS | CLIENT_WRITES
        ),
        "status_unchanged": unchanged,
        "samples": {"pass_s": pass_s, "get_collection_s": get_s},
    }


# --- c. planning ----------------------------------------------------------------------


def schema_64() -> tuple[DesiredSchema, ObservedCollection, int]:
    """64 desired vectors of every kind; the live collection differs in 6 places."""
    specs: list[VectorSpec] = []
    for i in range(64):
        kind = i % 4
        if kind == 0:
            doc: dict[str, Any] = {"type": "dense", "size": 256 + i, "distance": "Cosine"}
            doc["hnsw"] = {"m": 16, "efConstruct": 100}
        elif kind == 1:
            doc = {"type": "sparse", "modifier": "idf"}
        elif kind == 2:
            doc = {"type": "multidense", "size": 128, "distance": "Dot"}
        else:
            doc = {"type": "dense", "size": 768, "distance": "Euclid", "datatype": "float16"}
            doc["quantization"] = {"type": "scalar", "quantile": 0.99}
        specs.append(VectorSpec.model_validate({"name": f"v{i:02d}", **doc}))
    desired_defs = [vector_def_from_spec(s) for s in specs]
    live = list(desired_defs)
    live = live[2:]  # 2 added (v00, v01)
    live[0] = VectorDef(name="v02", type=live[0].type, size=64, distance=live[0].distance)
    # v04 re-tuned: its desired HNSW m is 16 and the live one 32. (A vector whose desired
    # HNSW is unset would be no difference: unset is "no opinion".)
    assert live[2].name == "v04" and live[2].hnsw is not None and live[2].hnsw.m == 16
    live[2] = dataclasses.replace(live[2], hnsw=dataclasses.replace(live[2].hnsw, m=32))
    live.append(vector_def_from_spec(VectorSpec(name="old_a", size=8, distance="Dot")))
    live.append(vector_def_from_spec(VectorSpec(name="old_b", type="sparse")))
    desired = DesiredSchema(
        vectors=tuple(desired_defs), origins={v.name: ("p",) for v in desired_defs}
    )
    observed = ObservedCollection(name="plan", vectors=tuple(live), points_count=1000)
    return desired, observed, 6


def bench_planning(calls: int, repeats: int, log: Callable[[str], None]) -> dict[str, Any]:
    desired, observed, differences = schema_64()
    capabilities = Capabilities(server_version="1.20.0")  # a real server: all in place

    def plan() -> Any:
        return make_plan(
            "plan", desired, observed, strategy=Strategy.AUTO, capabilities=capabilities
        )

    actions = sorted(a.kind.value for a in plan().actions)
    assert len(actions) == differences, actions
    doc = {
        "desired": [v.canonical() for v in desired.vectors],
        "observed": [v.canonical() for v in observed.vectors],
        "settings": dataclasses.asdict(CollectionSettings()),
    }
    size = len(json.dumps(doc))

    plan_s: list[float] = []
    dumps_s: list[float] = []
    for r in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            json.dumps(doc)
        dumps_s.append((time.perf_counter() - t0) / calls)
        t0 = time.perf_counter()
        for _ in range(calls):
            plan()
        plan_s.append((time.perf_counter() - t0) / calls)
        log(
            f"  c. repeat {r + 1}/{repeats}: make_plan {plan_s[-1] * 1e6:.1f} us, "
            f"json.dumps {dumps_s[-1] * 1e6:.1f} us"
        )
    return {
        "vectors": len(desired.vectors),
        "differences": differences,
        "actions": Counter(actions),
        "schema_json_bytes": size,
        "calls_per_repeat": calls,
        "repeats": repeats,
        "make_plan_s": median(plan_s),
        "json_dumps_s": median(dumps_s),
        "ratio": paired_ratio(plan_s, dumps_s),
        "samples": {"make_plan_s": plan_s, "json_dumps_s": dumps_s},
    }


# --- report ---------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f} ms"


def us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f} us"


def table(results: dict[str, Any]) -> str:
    a, b, c = results["add_vector"], results["resync"], results["planning"]
    n = f"{a['points']:,}"
    rows = [
        ("benchmark", "measured", "baseline", "ratio"),
        (
            f"a. add a vector, {n} points: Recreate + re-upsert",
            ms(a["recreate_plus_reingest_s"]),
            f"Auto in place {ms(a['in_place_s'])}",
            f"{a['ratio']:,.0f}x",
        ),
        (
            "     of which drop + recreate / re-upsert",
            f"{ms(a['recreate_s'])} / {ms(a['reingest_s'])}",
            "",
            "",
        ),
        (
            "     points kept: in place vs recreate",
            f"{a['points_kept_in_place']:,} vs {a['points_kept_recreate']:,}",
            "",
            "",
        ),
        (
            "b. no-change resync, one reconcile pass",
            us(b["pass_s"]),
            f"get_collection {us(b['get_collection_s'])}",
            f"{b['ratio']:.2f}x",
        ),
        (
            "     Qdrant calls per no-change pass",
            f"{b['qdrant_reads_per_pass']} read, {b['qdrant_writes_per_pass']} writes",
            f"gateway: {b['gateway_reads_per_pass']} read, {b['gateway_writes_per_pass']} writes",
            "",
        ),
        (
            f"c. make_plan, {c['vectors']} vectors, {c['differences']} differences",
            us(c["make_plan_s"]),
            f"json.dumps {us(c['json_dumps_s'])}",
            f"{c['ratio']:.1f}x",
        ),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for i, row in enumerate(rows):
        cells = [row[0].ljust(widths[0]), row[1].rjust(widths[1])]
        cells += [row[2].ljust(widths[2]), row[3].rjust(widths[3])]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def environment() -> dict[str, Any]:
    return {
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "qdrant_client": importlib.metadata.version("qdrant-client"),
        "qdrant": "qdrant-client local mode, on disk (temporary directory)",
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--points", type=int, default=5000, help="points in the collection (a, b)")
    p.add_argument("--repeats", type=int, default=3, help="repeats of (a); b and c do 2x+1")
    p.add_argument("--passes", type=int, default=200, help="resync passes per repeat (b)")
    p.add_argument("--calls", type=int, default=2000, help="make_plan calls per repeat (c)")
    p.add_argument("--out", type=Path, default=HERE / "results.json", help="results file")
    p.add_argument("-q", "--quiet", action="store_true", help="print the table only")
    args = p.parse_args(argv)
    if args.points < 1 or args.repeats < 1 or args.passes < 1 or args.calls < 1:
        p.error("--points, --repeats, --passes and --calls must be at least 1")

    def log(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    started = time.perf_counter()
    results: dict[str, Any] = {"environment": environment()}
    with tempfile.TemporaryDirectory(prefix="vectorschema-bench-") as tmp:
        client = Counting(QdrantClient(path=str(Path(tmp) / "qdrant")))
        raw = cast(QdrantClient, client)
        gateway = ClientGateway(raw, location=str(Path(tmp) / "qdrant"), local=True)
        try:
            log(f"a. add a vector to {args.points:,} points ({args.repeats} repeats)")
            results["add_vector"] = bench_add_vector(gateway, raw, args.points, args.repeats, log)
            log(f"b. no-change resync ({args.passes} passes per repeat)")
            results["resync"] = bench_resync(
                gateway, client, args.points, args.passes, 2 * args.repeats + 1, log
            )
        finally:
            gateway.close()
    log(f"c. planning ({args.calls} calls per repeat)")
    results["planning"] = bench_planning(args.calls, 2 * args.repeats + 1, log)
    results["runtime_s"] = time.perf_counter() - started

    b = results["resync"]
    results["checks"] = {
        "in_place_keeps_all_points": results["add_vector"]["points_kept_in_place"] == args.points,
        "recreate_keeps_no_points": results["add_vector"]["points_kept_recreate"] == 0,
        # one read of the collection (its name stamp spares the alias listing)
        "no_change_pass_is_one_read_no_writes": b["qdrant_calls_per_pass"] == {"get_collection": 1}
        and b["qdrant_writes_per_pass"] == 0
        and b["qdrant_other_calls_per_pass"] == 0
        and b["gateway_reads_per_pass"] == 1
        and b["gateway_writes_per_pass"] == 0,
        "no_change_pass_leaves_status_unchanged": b["status_unchanged"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=dict) + "\n")

    env = results["environment"]
    print(
        f"vectorschema benchmarks: {env['cpus']} CPUs, Python {env['python']}, "
        f"qdrant-client {env['qdrant_client']} local mode on disk; "
        "medians, ratios are medians of per-repeat ratios; "
        f"ran in {results['runtime_s']:.0f} s"
    )
    print(table(results))
    failed = [k for k, ok in results["checks"].items() if not ok]
    for k in failed:
        print(f"CHECK FAILED: {k}", file=sys.stderr)
    print(f"results: {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
