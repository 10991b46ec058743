"""Operator-level benchmarks: the operator as users run it, on the local control plane.

A private control plane (etcd + kube-apiserver + controller-manager from
~/.cache/vectorschema, audit log on) and the operator as a child process (`kopf run -m
vectorschema.k8s.handlers --all-namespaces --standalone`) with the embedded Qdrant on
disk. The operator authenticates as its own user (`vectorschema-operator`), so every API
request it makes is counted at the API server, in the audit log. Its Qdrant calls and
reconcile passes are counted inside it by `bench_hooks` (loaded with `-m bench_hooks`).

Phases, in order (figures in `bench-results.json` at the repository root):

1. latency: the floor first, a minimal watch-then-PATCH-/status loop in plain aiohttp
   (`baseline_responder.py`, a child process too) answering `--changes` spec changes; then
   the operator answering as many. Each change is a merge-patch of `spec.confirm` on one
   Namespace resource; its latency runs from just before the PATCH is sent to the arrival,
   on a watch, of the object with `status.observedGeneration` >= the new generation and
   Ready=True. Keys: `baseline_p50_s`, `latency_p50_s`/`_p95_s`/`_p99_s`,
   `latency_p50_ratio`.
2. scale: `--namespaces` Namespace resources of 3 Plugins each, created at once (16 POSTs in
   flight), until all are Ready on a cluster-wide watch. Keys: `scale_1000_ready_s`,
   `scale_create_s`, `scale_rss_mb` (the operator's peak RSS, VmHWM), `scale_api_requests`
   (audit events of the operator's user between the first create and all Ready; watches
   count when they end).
3. restart: the operator stopped (SIGTERM) and started again with a short resync
   (`--resync`, default 20 s). Keys: `restart_resume_s` (until every resource had a
   completed pass), `restart_writes` (API writes and Qdrant writes in that time).
4. idle: `--idle` seconds (default 120) with nothing changing. Keys: `idle_status_writes`,
   `idle_qdrant_writes`, `idle_qdrant_reads_per_ns_per_interval`,
   `idle_api_requests_per_ns_per_interval` (an interval is one resync period).
5. in place versus the seed's recreate (no cluster: `run.bench_add_vector` on a local store
   on disk): `--points` points (20,000) with two 384-dim vectors. Keys: `inplace_s`,
   `recreate_reingest_s`, `inplace_points_kept_ratio`.

With `--profile DIR`, py-spy (a pinned dev dependency) samples the operator during the
latency and scale phases and writes collapsed stacks (`latency.txt`, `scale.txt`, one
`frame;frame;... count` line each) and a summary of the hottest functions (`*.top.txt`).

Usage: `make bench`, or `.venv/bin/python bench/cluster.py [--namespaces N] [--changes C]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from qdrant_client import QdrantClient
from qdrant_client import models as qm

import run as unit_bench
from devenv import ControlPlane, build_binaries, free_port
from devenv.operatorproc import AuditEvent, OperatorProcess, count_requests, read_audit
from vectorschema.api import PluginSpec, VectorSpec
from vectorschema.api.constants import OWNER_METADATA_KEY, OWNER_UID_METADATA_KEY
from vectorschema.api.namespace import default_collection_name
from vectorschema.qdrant.client import ClientGateway

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
KUBECTL = Path(sys.executable).parent / "kubectl"
API = "/apis/vectorschema.dev/v1alpha1"
OPERATOR_USER = "vectorschema-operator"
PLUGINS = ("bench-text", "bench-image", "bench-audio")
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
MERGE = {"Content-Type": "application/merge-patch+json"}


STARTED = time.monotonic()


def log(line: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.1f}s] {line}", file=sys.stderr, flush=True)


def pct(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def settled(obj: dict[str, Any], generation: int | None = None) -> bool:
    status = obj.get("status") or {}
    gen = obj["metadata"]["generation"] if generation is None else generation
    observed = status.get("observedGeneration")
    return (
        observed is not None
        and observed >= gen
        and any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions", [])
        )
    )


class Api:
    """Plain aiohttp against the API server, as the admin."""

    def __init__(self, plane: ControlPlane) -> None:
        ctx = ssl.create_default_context(cafile=str(plane.ca_file))
        ctx.load_cert_chain(str(plane.pki_dir / "admin.crt"), str(plane.pki_dir / "admin.key"))
        self.server = plane.server
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ctx, limit=32),
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
        )

    async def request(
        self, method: str, path: str, body: Any = None, *, patience: float = 60, **kw: Any
    ) -> Any:
        """One request; a 429 (e.g. "storage is (re)initializing" for a resource just made)
        is retried after the server's retryAfterSeconds, for up to `patience` seconds."""
        data = json.dumps(body) if body is not None else None
        headers = kw.pop("headers", {"Content-Type": "application/json"})
        deadline = time.monotonic() + patience
        while True:
            async with self.session.request(
                method, self.server + path, data=data, headers=headers, **kw
            ) as resp:
                payload = await resp.json()
                if resp.status == 429 and time.monotonic() < deadline:
                    retry = (payload.get("details") or {}).get("retryAfterSeconds", 1)
                    await asyncio.sleep(min(float(retry), 1.0))
                    continue
                if resp.status >= 300:
                    raise RuntimeError(f"{method} {path}: HTTP {resp.status}: {payload}")
                return payload

    async def watch(
        self, path: str, version: str, on_event: Callable[[str, dict[str, Any], float], None]
    ) -> None:
        """Watch `path` from `version` (re-watching when the server ends it) until cancelled.
        A watch the server refuses (version too old) is resumed from a fresh list, whose
        objects are passed on as ADDED: nothing is missed, and handlers are idempotent."""
        while True:
            params = {"watch": "1", "resourceVersion": version, "allowWatchBookmarks": "1"}
            refused = False
            async with self.session.get(self.server + path, params=params) as resp:
                if resp.status != 200:
                    await resp.read()
                    refused = True
                else:
                    async for line in resp.content:
                        arrived = time.perf_counter()
                        event = json.loads(line)
                        obj = event["object"]
                        if event["type"] == "ERROR":
                            refused = True
                            break
                        version = obj["metadata"].get("resourceVersion", version)
                        if event["type"] in ("ADDED", "MODIFIED"):
                            on_event(event["type"], obj, arrived)
            if refused:
                listing = await self.request("GET", path)
                arrived = time.perf_counter()
                version = listing["metadata"]["resourceVersion"]
                for obj in listing["items"]:
                    on_event("ADDED", obj, arrived)

    async def close(self) -> None:
        await self.session.close()


def namespace_doc(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "vectorschema.dev/v1alpha1",
        "kind": "Namespace",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"plugins": [{"name": p} for p in PLUGINS]},
    }


async def setup(api: Api, plane: ControlPlane, tenants: Sequence[str]) -> None:
    subprocess.run(
        [str(KUBECTL), f"--kubeconfig={plane.kubeconfig}", "apply", "-f", str(REPO / "crds")],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            str(KUBECTL),
            f"--kubeconfig={plane.kubeconfig}",
            "wait",
            "--for=condition=Established",
            "crd/namespaces.vectorschema.dev",
            "crd/plugins.vectorschema.dev",
            "--timeout=60s",
        ],
        check=True,
        capture_output=True,
    )
    for i, plugin in enumerate(PLUGINS):
        await api.request(
            "POST",
            f"{API}/plugins",
            {
                "apiVersion": "vectorschema.dev/v1alpha1",
                "kind": "Plugin",
                "metadata": {"name": plugin},
                "spec": {"vectors": [{"name": f"v{i}", "size": 32, "distance": "Cosine"}]},
            },
        )
    for tenant in tenants:
        await api.request(
            "POST", "/api/v1/namespaces", {"metadata": {"name": tenant}, "apiVersion": "v1"}
        )


async def plugins_settled(api: Api, timeout: float = 120) -> None:
    """Until the operator has taken in every Plugin (their status is written): the first
    Namespace is created only then, so start-up work is not counted as its."""
    deadline = time.monotonic() + timeout
    while True:
        items = (await api.request("GET", f"{API}/plugins"))["items"]
        if len(items) == len(PLUGINS) and all(settled(p) for p in items):
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: the operator wrote no Plugin status in {timeout:g} s")
        await asyncio.sleep(0.2)


# --- 1. reaction latency --------------------------------------------------------------


async def measure_latency(api: Api, namespace: str, name: str, changes: int) -> list[float]:
    """`changes` spec changes of one object, one at a time; seconds until each is observed."""
    path = f"{API}/namespaces/{namespace}/namespaces"
    created = await api.request("POST", path, namespace_doc(namespace, name))
    queue: asyncio.Queue[tuple[dict[str, Any], float]] = asyncio.Queue()
    watch = asyncio.create_task(
        api.watch(
            f"{path}?fieldSelector=metadata.name%3D{name}",
            created["metadata"]["resourceVersion"],
            lambda _t, obj, at: queue.put_nowait((obj, at)),
        )
    )

    async def until_settled(generation: int) -> float:
        while True:
            obj, arrived = await asyncio.wait_for(queue.get(), timeout=60)
            if settled(obj, generation):
                return arrived

    try:
        await until_settled(created["metadata"]["generation"])
        samples = []
        for i in range(changes):
            await asyncio.sleep(0.05)
            t0 = time.perf_counter()
            body = await api.request(
                "PATCH", f"{path}/{name}", {"spec": {"confirm": i % 2 == 0}}, headers=MERGE
            )
            arrived = await until_settled(body["metadata"]["generation"])
            samples.append(arrived - t0)
        return samples
    finally:
        watch.cancel()


async def responder_watching(proc: asyncio.subprocess.Process, timeout: float = 120) -> None:
    """Until the floor's responder has its watch open (it prints `watching`): the first
    change is sent only then. Fails at once if it exits, or after `timeout`."""
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout)
    except TimeoutError:
        raise SystemExit(f"bench: the floor's responder opened no watch in {timeout:g} s") from None
    if line.strip() != b"watching":
        raise SystemExit(f"bench: the floor's responder exited ({await proc.wait()}): {line!r}")


# --- the operator ---------------------------------------------------------------------


class Operator:
    def __init__(self, plane: ControlPlane, workdir: Path, extra_env: Sequence[str] = ()) -> None:
        self.extra_env = dict(kv.split("=", 1) for kv in extra_env)
        self.kubeconfig = plane.user_kubeconfig(OPERATOR_USER, ["system:masters"])
        self.workdir = workdir
        self.port = free_port()
        self.proc: OperatorProcess | None = None
        self.started_at = 0.0

    def start(self, resync: float) -> None:
        self.proc = OperatorProcess(
            self.workdir / "operator.log",
            env={
                "KUBECONFIG": str(self.kubeconfig),
                "QDRANT_PATH": str(self.workdir / "qdrant"),
                "VECTORSCHEMA_RESYNC_SECONDS": str(resync),
                "BENCH_HOOKS_PORT": str(self.port),
                **self.extra_env,
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(HERE), os.environ.get("PYTHONPATH")])
                ),
            },
            args=("--all-namespaces", "--standalone", "-m", "bench_hooks"),
        )
        self.started_at = time.perf_counter()
        self.proc.start()

    async def counts(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        async with session.get(f"http://127.0.0.1:{self.port}/counts") as resp:
            data: dict[str, Any] = await resp.json()
            return data

    async def wait_serving(self, session: aiohttp.ClientSession, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None and self.proc.running(), self.tail()
            try:
                await self.counts(session)
                return
            except aiohttp.ClientError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    def tail(self) -> str:
        return self.proc.log_tail() if self.proc else ""

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


# --- the whole run --------------------------------------------------------------------


class Profiler:
    """py-spy sampling one process into collapsed stacks, from `start` to `stop`."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.proc: subprocess.Popen[bytes] | None = None
        self.out: Path | None = None

    def start(self, pid: int, name: str) -> None:
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        self.out = self.directory / f"{name}.txt"
        spy = Path(sys.executable).parent / "py-spy"
        self.proc = subprocess.Popen(
            [
                *(str(spy), "record", "--pid", str(pid), "--rate", "100", "--format", "raw"),
                *("--nonblocking", "--threads", "-o", str(self.out)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.proc is None or self.out is None:
            return
        self.proc.send_signal(2)  # SIGINT: py-spy writes what it has
        self.proc.wait(60)
        self.proc = None
        (self.out.with_suffix(".top.txt")).write_text(summarize(self.out))


def summarize(collapsed: Path, top: int = 40) -> str:
    """The functions with the most samples anywhere on the stack (inclusive), and at the
    top of it (self), as a share of all samples."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n
        own[frames[-1]] = own.get(frames[-1], 0) + n
    lines = [f"{total} samples", "", "inclusive:"]
    for frame, n in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{100 * n / total:5.1f}%  {frame}")
    lines += ["", "self:"]
    for frame, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{100 * n / total:5.1f}%  {frame}")
    return "\n".join(lines) + "\n"


async def audit_caught_up(api: Api, plane: ControlPlane, since: float, timeout: float = 60) -> None:
    """Until the audit log holds a request sent after `since` (wall clock): then every
    request that completed before it is in the log too."""
    log_file = plane.audit_log_file
    _, offset = read_audit(log_file)  # whole lines so far: the marker comes after them
    await api.request("GET", "/api/v1/namespaces/default")
    deadline = time.monotonic() + timeout
    while True:
        events, offset = read_audit(log_file, offset)
        if any(e.resource == "namespaces" and e.name == "default" and e.time >= since
               for e in events):  # fmt: skip
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: the audit log did not catch up in {timeout:g} s")
        await asyncio.sleep(0.1)


def operator_events(plane: ControlPlane, start: float, end: float) -> list[AuditEvent]:
    events, _ = read_audit(plane.audit_log_file)
    return [e for e in events if e.user == OPERATOR_USER and start <= e.time <= end]


async def scale_phase(
    api: Api,
    plane: ControlPlane,
    operator: Operator,
    local: aiohttp.ClientSession,
    tenants: Sequence[str],
    n: int,
    timeout: float,
    profiler: Profiler | None = None,
) -> dict[str, Any]:
    """`n` Namespaces of 3 Plugins, created 16 at a time, until all are Ready on a
    cluster-wide watch. Keys without a prefix (the caller names them)."""
    out: dict[str, Any] = {}
    assert operator.proc is not None
    ready: set[str] = set()
    all_ready = asyncio.Event()
    chosen = set(tenants)

    def on_scale_event(_t: str, obj: dict[str, Any], _at: float) -> None:
        if obj["metadata"]["namespace"] in chosen and settled(obj):
            ready.add(obj["metadata"]["uid"])
            if len(ready) >= n:
                all_ready.set()

    listing = await api.request("GET", f"{API}/namespaces")
    watch = asyncio.create_task(
        api.watch(f"{API}/namespaces", listing["metadata"]["resourceVersion"], on_scale_event)
    )
    sem = asyncio.Semaphore(16)

    async def create(i: int) -> None:
        tenant = tenants[i % len(tenants)]
        async with sem:
            await api.request(
                "POST",
                f"{API}/namespaces/{tenant}/namespaces",
                namespace_doc(tenant, f"ns-{i:05d}"),
            )

    before = await operator.counts(local)
    if profiler is not None:
        profiler.start(operator.proc.pid, "scale")
    cpu0 = operator.proc.cpu_seconds()
    wall0, t0 = time.time(), time.perf_counter()
    try:
        await asyncio.gather(*(create(i) for i in range(n)))
        out["create_s"] = time.perf_counter() - t0
        try:
            await asyncio.wait_for(all_ready.wait(), timeout=timeout)
        except TimeoutError:
            raise SystemExit(f"bench: only {len(ready)}/{n} Ready\n{operator.tail()}") from None
        out["ready_s"] = time.perf_counter() - t0
        wall1 = time.time()
    finally:
        if profiler is not None:
            profiler.stop()
        watch.cancel()
    out["rss_mb"] = operator.proc.peak_rss_mb()
    out["cpu_s"] = operator.proc.cpu_seconds() - cpu0
    after = await operator.counts(local)
    await audit_caught_up(api, plane, wall1)
    events = operator_events(plane, wall0, wall1)
    out["api_requests"] = len(events)
    out["api_requests_by_kind"] = dict(count_requests(events).most_common())
    out["qdrant_reads"] = after["qdrant_reads"] - before["qdrant_reads"]
    out["qdrant_writes"] = after["qdrant_writes"] - before["qdrant_writes"]
    http = Counter(after["qdrant_http"]) - Counter(before["qdrant_http"])
    out["qdrant_http_by_request"] = dict(http)
    out["qdrant_http_requests"] = sum(http.values())
    out["qdrant_http_reads"] = sum(v for k, v in http.items() if k.startswith("GET "))
    out["passes"] = after["passes"] - before["passes"]
    out["wakes"] = dict(Counter(after["wakes"]) - Counter(before["wakes"]))
    gc0 = before.get("gc", {})
    out["gc"] = {k: v - gc0.get(k, 0) for k, v in after.get("gc", {}).items()}
    return out


async def idle_phase(
    api: Api,
    plane: ControlPlane,
    operator: Operator,
    local: aiohttp.ClientSession,
    seconds: float,
    resync: float,
    total: int,
) -> dict[str, Any]:
    """`seconds` with nothing changing. Keys without the `idle_` prefix."""
    assert operator.proc is not None
    before = await operator.counts(local)
    cpu0 = operator.proc.cpu_seconds()
    wall0 = time.time()
    await asyncio.sleep(seconds)
    cpu = operator.proc.cpu_seconds() - cpu0
    wall1 = time.time()
    after = await operator.counts(local)
    await audit_caught_up(api, plane, wall1)
    idle = operator_events(plane, wall0, wall1)
    per = total * seconds / resync  # Namespace-intervals
    return {
        "seconds": seconds,
        "resync_s": resync,
        "cpu_s": cpu,
        "cpu_s_per_interval": cpu * resync / seconds,
        "status_writes": sum(
            1 for e in idle if e.verb in WRITE_VERBS and e.subresource == "status"
        ),
        "api_writes": sum(1 for e in idle if e.verb in WRITE_VERBS),
        "qdrant_writes": after["qdrant_writes"] - before["qdrant_writes"],
        "passes_per_ns_per_interval": (after["passes"] - before["passes"]) / per,
        "qdrant_reads_per_ns_per_interval": (after["qdrant_reads"] - before["qdrant_reads"]) / per,
        "api_requests_per_ns_per_interval": len(idle) / per,
        "api_requests_by_kind": dict(count_requests(idle).most_common()),
    }


async def bench(args: argparse.Namespace, plane: ControlPlane, workdir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    tenants = [f"scale-{i:02d}" for i in range(tenant_count(args, args.namespaces))]
    api = Api(plane)
    local = aiohttp.ClientSession()
    operator = Operator(plane, workdir, args.operator_env)
    profiler = Profiler(args.profile)
    baseline: asyncio.subprocess.Process | None = None
    try:
        await setup(api, plane, ["bench-baseline", "bench-latency", *tenants])

        log(f"1. latency: the aiohttp floor, {args.changes} spec changes")
        baseline = await asyncio.create_subprocess_exec(
            sys.executable,
            str(HERE / "baseline_responder.py"),
            plane.server,
            str(plane.ca_file),
            str(plane.pki_dir / "admin.crt"),
            str(plane.pki_dir / "admin.key"),
            "bench-baseline",
            stdout=asyncio.subprocess.PIPE,
        )
        await responder_watching(baseline)
        floor = await measure_latency(api, "bench-baseline", "floor", args.changes)
        baseline.terminate()
        await baseline.wait()
        baseline = None
        # The operator must not see the floor's object (it would take it over).
        await api.request("DELETE", f"{API}/namespaces/bench-baseline/namespaces/floor")

        log(f"   the operator, {args.changes} spec changes")
        operator.start(resync=60)
        await operator.wait_serving(local)
        await plugins_settled(api)
        assert operator.proc is not None
        profiler.start(operator.proc.pid, "latency")
        cpu0 = operator.proc.cpu_seconds()
        ours = await measure_latency(api, "bench-latency", "latency", args.changes)
        out["latency_cpu_s_per_change"] = (operator.proc.cpu_seconds() - cpu0) / len(ours)
        profiler.stop()
        out.update(
            baseline_p50_s=statistics.median(floor),
            baseline_p99_s=pct(floor, 0.99),
            latency_p50_s=statistics.median(ours),
            latency_p95_s=pct(ours, 0.95),
            latency_p99_s=pct(ours, 0.99),
            latency_changes=len(ours),
        )
        out["latency_p50_ratio"] = out["latency_p50_s"] / out["baseline_p50_s"]
        out["latency_p99_ratio"] = out["latency_p99_s"] / out["baseline_p99_s"]
        log(
            f"   p50 {out['latency_p50_s'] * 1e3:.0f} ms (floor {out['baseline_p50_s'] * 1e3:.0f}"
            f" ms, ratio {out['latency_p50_ratio']:.2f}), p99 {out['latency_p99_s'] * 1e3:.0f} ms"
            f" (floor {out['baseline_p99_s'] * 1e3:.0f} ms, ratio {out['latency_p99_ratio']:.2f})"
        )

        n = args.namespaces
        log(f"2. scale: {n} Namespaces of {len(PLUGINS)} Plugins each, at once")
        scale = await scale_phase(
            api, plane, operator, local, tenants, n, scale_timeout(args, n), profiler
        )
        out["scale_namespaces"] = n
        out["scale_1000_ready_s"] = scale["ready_s"]
        out["scale_create_s"] = scale["create_s"]
        out["scale_rss_mb"] = scale["rss_mb"]
        out["scale_cpu_s"] = scale["cpu_s"]
        out["scale_api_requests"] = scale["api_requests"]
        out["scale_api_requests_by_kind"] = scale["api_requests_by_kind"]
        out["scale_qdrant_calls_per_namespace"] = (
            scale["qdrant_reads"] + scale["qdrant_writes"]
        ) / n
        log(
            f"   all Ready after {out['scale_1000_ready_s']:.1f} s (creates took "
            f"{out['scale_create_s']:.1f} s), peak RSS {out['scale_rss_mb']:.0f} MB, "
            f"{out['scale_api_requests']} API requests"
        )

        total = n + 1  # and the latency object
        log(f"3. restart with resync {args.resync:g} s")
        operator.stop()
        await asyncio.sleep(1)
        wall0 = time.time()
        operator.start(resync=args.resync)
        await operator.wait_serving(local)
        while (await operator.counts(local))["resources_passed"] < total:
            await asyncio.sleep(0.2)
            if time.perf_counter() - operator.started_at > scale_timeout(args, n):
                raise SystemExit(f"bench: restart did not resume\n{operator.tail()}")
        out["restart_resume_s"] = time.perf_counter() - operator.started_at
        wall1 = time.time()
        counts = await operator.counts(local)
        await audit_caught_up(api, plane, wall1)
        restart_writes = [e for e in operator_events(plane, wall0, wall1) if e.verb in WRITE_VERBS]
        out["restart_api_writes"] = len(restart_writes)
        out["restart_qdrant_writes"] = counts["qdrant_writes"]
        out["restart_writes"] = len(restart_writes) + counts["qdrant_writes"]
        out["restart_writes_by_kind"] = dict(count_requests(restart_writes))
        log(
            f"   all re-observed after {out['restart_resume_s']:.1f} s, "
            f"{out['restart_writes']} writes"
        )

        log(f"4. idle for {args.idle:g} s (resync {args.resync:g} s)")
        idle = await idle_phase(api, plane, operator, local, args.idle, args.resync, total)
        out.update({f"idle_{k}": v for k, v in idle.items()})
        log(
            f"   {out['idle_status_writes']} status writes, {out['idle_qdrant_writes']} "
            f"Qdrant writes, {out['idle_qdrant_reads_per_ns_per_interval']:.2f} Qdrant reads "
            f"and {out['idle_api_requests_per_ns_per_interval']:.2f} API requests per "
            "Namespace per interval"
        )
        assert operator.proc is not None
        out["operator_rss_mb_end"] = operator.proc.rss_mb()
        out["operator_peak_rss_mb_end"] = operator.proc.peak_rss_mb()
    finally:
        profiler.stop()
        if baseline is not None and baseline.returncode is None:
            baseline.kill()
            await baseline.wait()
        operator.stop()
        await local.close()
        await api.close()
    return out


#: The operator serves at most this many Namespace resources per Kubernetes namespace by
#: default (`VECTORSCHEMA_MAX_NAMESPACES_PER_KUBE_NAMESPACE`).
PER_KUBE_NAMESPACE = 100


def tenant_count(args: argparse.Namespace, n: int) -> int:
    """`--tenants`, or more when `n` Namespaces would not fit in them under the default
    per-namespace cap (10,000 Namespaces: 100 tenants of 100)."""
    return max(int(args.tenants), -(-n // PER_KUBE_NAMESPACE))


def scale_timeout(args: argparse.Namespace, n: int) -> float:
    """The wait for `n` Namespaces: `--scale-timeout`, or more for a large `n`."""
    return float(max(args.scale_timeout, 0.5 * n))


# --- a fresh control plane: the server path and the growth table ----------------------


async def fresh_scale(
    args: argparse.Namespace,
    binaries: Path,
    workdir: Path,
    label: str,
    n: int,
    env: Sequence[str],
    idle: float,
    resync: float,
) -> dict[str, Any]:
    """`n` Namespaces on a control plane of their own, with an operator whose environment
    adds `env`; then, if `idle` > 0, `idle` seconds of nothing changing (resync `resync`).
    A fresh plane: nothing of an earlier phase is watched, counted or reconciled."""
    plane = ControlPlane(workdir / label / "plane", binaries, audit_log=True)
    plane.start(timeout=120)
    tenants = [f"{label}-{i:02d}" for i in range(tenant_count(args, n))]
    api = Api(plane)
    local = aiohttp.ClientSession()
    operator = Operator(plane, workdir / label, [*args.operator_env, *env])
    profiler = Profiler(args.profile / label if args.profile else None)
    try:
        await setup(api, plane, tenants)
        operator.start(resync=resync)
        await operator.wait_serving(local)
        await plugins_settled(api)
        out = await scale_phase(
            api, plane, operator, local, tenants, n, scale_timeout(args, n), profiler
        )
        if idle > 0:
            idle_out = await idle_phase(api, plane, operator, local, idle, resync, n)
            out.update({f"idle_{k}": v for k, v in idle_out.items()})
        return out
    finally:
        profiler.stop()
        operator.stop()
        await local.close()
        await api.close()
        plane.stop()


def server_env(args: argparse.Namespace) -> list[str]:
    """The operator's environment for `--qdrant-url`, at `--in-flight` calls at once."""
    env = [f"QDRANT_URL={args.qdrant_url}", f"VECTORSCHEMA_QDRANT_MAX_IN_FLIGHT={args.in_flight}"]
    if args.qdrant_api_key:
        env.append(f"QDRANT_API_KEY={args.qdrant_api_key}")
    return env


def qdrant_client_for(url: str, api_key: str | None, in_flight: int) -> QdrantClient:
    return QdrantClient(
        url=url, api_key=api_key, timeout=60, check_compatibility=False, pool_size=in_flight
    )


class CountingTransport:
    """Counts the HTTP requests of one `QdrantClient` by method (its REST client's
    `send_inner`, the same place `bench_hooks` counts the operator's)."""

    def __init__(self, client: QdrantClient) -> None:
        self.by_method: Counter[str] = Counter()
        self._lock = threading.Lock()
        rest = client._client.openapi_client.client  # type: ignore[attr-defined]
        inner = rest.send_inner

        def send_inner(request: Any) -> Any:
            with self._lock:
                self.by_method[request.method] += 1
            return inner(request)

        rest.send_inner = send_inner


def floor_create(
    client: QdrantClient, names: Sequence[str], in_flight: int
) -> tuple[float, Counter[str]]:
    """The server's own floor: `names` created directly with qdrant-client, `in_flight` at
    a time, each as the operator creates a Namespace's collection (its 3 vectors and the
    owner stamps). Seconds, and the HTTP requests by method."""
    counting = CountingTransport(client)
    vectors = {
        f"v{i}": qm.VectorParams(size=32, distance=qm.Distance.COSINE) for i in range(len(PLUGINS))
    }

    def create(name: str) -> None:
        client.create_collection(
            name,
            vectors_config=vectors,
            metadata={OWNER_METADATA_KEY: f"bench/{name}", OWNER_UID_METADATA_KEY: name},
        )

    t0 = time.perf_counter()
    with ThreadPoolExecutor(in_flight) as pool:
        list(pool.map(create, names))
    return time.perf_counter() - t0, Counter(counting.by_method)


def delete_collections(
    client: QdrantClient, names: Sequence[str], in_flight: int, *, must: bool = False
) -> None:
    """Leave the user's server as it was: the collections this run made (named by its own
    run id), and no others. Deleting a name that is not there is a no-op. A failed delete
    is tried once more after a moment. What still fails stops the run when `must` (the
    floor's collections, before the operator's phase: left there, they would skew it), and
    is otherwise reported, not raised, so that a failed clean-up does not throw away the
    run's figures (seen: EBADF from the client on loopback under load)."""

    def delete(name: str) -> str | None:
        for attempt in (1, 2):
            try:
                client.delete_collection(name)
                return None
            except Exception as exc:
                if attempt == 2:
                    return f"{name}: {exc}"
                time.sleep(0.5)
        return None

    with ThreadPoolExecutor(in_flight) as pool:
        failed = [f for f in pool.map(delete, names) if f is not None]
    if failed:
        message = f"could not delete {len(failed)} collections, e.g. {failed[0]}"
        if must:
            raise SystemExit(f"bench: {message}")
        log(f"   {message}: delete them by hand (their names start with this run's id)")


async def bench_server(
    args: argparse.Namespace, binaries: Path, workdir: Path, run_id: str
) -> dict[str, Any]:
    """The scale phase against `--qdrant-url`, and the server's own floor in the same run."""
    n, in_flight = args.namespaces, args.in_flight
    client = qdrant_client_for(args.qdrant_url, args.qdrant_api_key, in_flight)
    label = f"vsb{run_id}"
    tenants = [f"{label}-{i:02d}" for i in range(tenant_count(args, n))]
    ours = [default_collection_name(tenants[i % len(tenants)], f"ns-{i:05d}") for i in range(n)]
    floor_names = [f"{label}-floor_ns-{i:05d}" for i in range(n)]
    try:
        version = client.info().version
        log(f"6. server: the floor, {n} collections made directly, {in_flight} in flight")
        floor_s, floor_http = floor_create(client, floor_names, in_flight)
        delete_collections(client, floor_names, in_flight, must=True)
        log(f"   {floor_s:.1f} s; the operator on a fresh control plane")
        scale = await fresh_scale(args, binaries, workdir, label, n, server_env(args), 0, 60)
    finally:
        delete_collections(client, [*floor_names, *ours], in_flight)
        client.close()
    http = scale["qdrant_http_by_request"]
    out = {
        "server_version": version,
        "server_namespaces": n,
        "server_in_flight": in_flight,
        "server_scale_1000_ready_s": scale["ready_s"],
        "server_floor_1000_s": floor_s,
        "server_scale_ratio": scale["ready_s"] / floor_s,
        "server_scale_rss_mb": scale["rss_mb"],
        "server_scale_cpu_s": scale["cpu_s"],
        "server_scale_api_requests": scale["api_requests"],
        "server_requests_per_namespace": scale["qdrant_http_requests"] / n,
        "server_reads_per_namespace": scale["qdrant_http_reads"] / n,
        "server_writes_per_namespace": (scale["qdrant_http_requests"] - scale["qdrant_http_reads"])
        / n,
        "server_passes_per_namespace": scale["passes"] / n,
        # every pass reads once; passes beyond one per Namespace are resyncs (60 s) of
        # those Ready early, or repeats after failures
        "server_reads_per_pass": scale["qdrant_http_reads"] / max(scale["passes"], 1),
        "server_wakes": scale["wakes"],
        "server_requests_by_kind": http,
        "server_floor_requests_per_collection": sum(floor_http.values()) / n,
    }
    log(
        f"   all Ready after {out['server_scale_1000_ready_s']:.1f} s: "
        f"{out['server_scale_ratio']:.2f}x the floor, peak RSS {out['server_scale_rss_mb']:.0f}"
        f" MB, {out['server_requests_per_namespace']:.2f} Qdrant requests per Namespace {http}"
    )
    return out


GROWTH_FIELDS = (
    "ready_s",
    "rss_mb",
    "cpu_s",
    "api_requests",
    "qdrant_requests_per_ns",
    "idle_cpu_s_per_interval",
    "idle_api_requests_per_ns_per_interval",
    "idle_qdrant_reads_per_ns_per_interval",
)


async def bench_growth(
    args: argparse.Namespace, binaries: Path, workdir: Path, run_id: str
) -> dict[str, Any]:
    """The scale phase at each `--growth` size, each on a fresh plane, then `--growth-idle`
    seconds idle at the default resync (60 s): how the cost grows with the work."""
    out: dict[str, Any] = {"growth_sizes": args.growth}
    env: list[str] = []
    client: QdrantClient | None = None
    if args.qdrant_url:
        env = [
            f"QDRANT_URL={args.qdrant_url}",
            f"VECTORSCHEMA_QDRANT_MAX_IN_FLIGHT={args.in_flight}",
        ]
        if args.qdrant_api_key:
            env.append(f"QDRANT_API_KEY={args.qdrant_api_key}")
        client = qdrant_client_for(args.qdrant_url, args.qdrant_api_key, args.in_flight)
    out["growth_qdrant"] = "server" if client is not None else "embedded"
    try:
        for n in args.growth:
            label = f"vsg{run_id}-{n}"
            log(f"7. growth: {n} Namespaces on a fresh plane ({out['growth_qdrant']} Qdrant)")
            try:
                row = await fresh_scale(
                    args, binaries, workdir, label, n, env, args.growth_idle, args.growth_resync
                )
            finally:
                if client is not None:
                    tenants = [f"{label}-{i:02d}" for i in range(tenant_count(args, n))]
                    names = [
                        default_collection_name(tenants[i % len(tenants)], f"ns-{i:05d}")
                        for i in range(n)
                    ]
                    delete_collections(client, names, args.in_flight)
            qdrant = (
                row["qdrant_http_requests"]
                if client
                else row["qdrant_reads"] + row["qdrant_writes"]
            )
            row["qdrant_requests_per_ns"] = qdrant / n
            out.update({f"growth_{n}_{k}": row[k] for k in GROWTH_FIELDS})
            # what the figures are made of (not checked as figures): passes, wake-ups,
            # API requests by kind, Qdrant requests by kind
            out[f"growth_{n}_detail"] = {
                k: row[k]
                for k in ("passes", "wakes", "gc", "api_requests_by_kind", "qdrant_http_by_request")
                if k in row
            }
            log(
                f"   Ready after {row['ready_s']:.1f} s, peak RSS {row['rss_mb']:.0f} MB, "
                f"{row['api_requests']} API requests, {row['qdrant_requests_per_ns']:.2f} Qdrant "
                f"requests per Namespace; idle {row['idle_cpu_s_per_interval']:.2f} CPU s per "
                f"interval"
            )
    finally:
        if client is not None:
            client.close()
    if len(args.growth) >= 2:
        small, large = args.growth[-2], args.growth[-1]
        out["growth_size_ratio"] = large / small
        out["growth_ready_ratio"] = out[f"growth_{large}_ready_s"] / out[f"growth_{small}_ready_s"]
    return out


def bench_inplace(points: int, workdir: Path) -> dict[str, Any]:
    """In place versus the seed's recreate + re-ingest: `run.bench_add_vector` with two
    384-dim vectors (the collection has one; the change adds the second)."""
    base = VectorSpec(name="text_384", size=384, distance="Cosine")
    added = VectorSpec(name="image_384", size=384, distance="Cosine")
    unit_bench.TEXT, unit_bench.IMAGE = base, added
    unit_bench.PLUGINS = {"text": PluginSpec(vectors=[base]), "image": PluginSpec(vectors=[added])}
    path = str(workdir / "inplace")
    client = QdrantClient(path=path)
    gateway = ClientGateway(client, location=path, local=True)
    try:
        a = unit_bench.bench_add_vector(gateway, client, points, 1, log)
    finally:
        gateway.close()
    return {
        "inplace_points": points,
        "inplace_s": a["in_place_s"],
        "recreate_reingest_s": a["recreate_plus_reingest_s"],
        "inplace_points_kept_ratio": a["points_kept_in_place"] / points,
        "recreate_points_kept_ratio": a["points_kept_recreate"] / points,
    }


STAGES = ("cluster", "inplace", "server", "growth")

CLUSTER_KEYS = (
    "baseline_p50_s",
    "baseline_p99_s",
    "latency_p50_s",
    "latency_p95_s",
    "latency_p99_s",
    "latency_p50_ratio",
    "latency_p99_ratio",
    "latency_cpu_s_per_change",
    "scale_namespaces",
    "scale_1000_ready_s",
    "scale_create_s",
    "scale_rss_mb",
    "scale_cpu_s",
    "scale_api_requests",
    "scale_qdrant_calls_per_namespace",
    "restart_resume_s",
    "restart_writes",
    "restart_api_writes",
    "restart_qdrant_writes",
    "idle_status_writes",
    "idle_api_writes",
    "idle_qdrant_writes",
    "idle_cpu_s_per_interval",
    "idle_passes_per_ns_per_interval",
    "idle_qdrant_reads_per_ns_per_interval",
    "idle_api_requests_per_ns_per_interval",
    "operator_rss_mb_end",
    "operator_peak_rss_mb_end",
)
INPLACE_KEYS = (
    "inplace_s",
    "recreate_reingest_s",
    "inplace_points_kept_ratio",
    "recreate_points_kept_ratio",
)
SERVER_KEYS = (
    "server_scale_1000_ready_s",
    "server_floor_1000_s",
    "server_scale_ratio",
    "server_scale_rss_mb",
    "server_requests_per_namespace",
    "server_reads_per_namespace",
    "server_writes_per_namespace",
    "server_passes_per_namespace",
    "server_reads_per_pass",
    "server_floor_requests_per_collection",
)


def expected_keys(args: argparse.Namespace) -> list[str]:
    """Every figure this run must write (a number each): what `--stages` asked for."""
    keys: list[str] = []
    if "cluster" in args.stages:
        keys += CLUSTER_KEYS
    if "inplace" in args.stages and args.points > 0:
        keys += INPLACE_KEYS
    if "server" in args.stages and args.qdrant_url:
        keys += SERVER_KEYS
    if "growth" in args.stages:
        keys += [f"growth_{n}_{k}" for n in args.growth for k in GROWTH_FIELDS]
        if len(args.growth) >= 2:
            keys += ["growth_size_ratio", "growth_ready_ratio"]
    return keys


def write_results(out: Path, results: dict[str, Any], stages: Sequence[str]) -> None:
    """Merge this run's figures into `out`: the figures of stages not run this time (a
    hand-run server path, the in-cluster tests' failover times) stay, and
    `stages_measured_at` says when each stage last ran."""
    try:
        merged = json.loads(out.read_text())
    except (OSError, ValueError):
        merged = {}
    if not isinstance(merged, dict):
        merged = {}
    when = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    measured_at = {**merged.get("stages_measured_at", {}), **dict.fromkeys(stages, when)}
    merged.update(results)
    merged["stages_measured_at"] = measured_at
    out.write_text(json.dumps(merged, indent=2) + "\n")


def sizes(raw: str) -> list[int]:
    return [int(x) for x in raw.split(",") if x.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--namespaces", type=int, default=1000, help="Namespaces in the scale phase")
    p.add_argument("--tenants", type=int, default=10, help="Kubernetes namespaces they go in")
    p.add_argument("--changes", type=int, default=120, help="spec changes for latency")
    p.add_argument("--resync", type=float, default=20.0, help="resync seconds (restart, idle)")
    p.add_argument("--idle", type=float, default=120.0, help="idle seconds")
    p.add_argument(
        "--points", type=int, default=20000, help="points (in place vs recreate); 0 skips it"
    )
    p.add_argument("--scale-timeout", type=float, default=900.0)
    p.add_argument(
        "--qdrant-url",
        default=os.environ.get("QDRANT_URL") or None,
        help="a Qdrant server: the server stage runs against it (default: $QDRANT_URL)",
    )
    p.add_argument(
        "--qdrant-api-key",
        default=os.environ.get("QDRANT_API_KEY") or None,
        help="its API key (default: $QDRANT_API_KEY)",
    )
    p.add_argument(
        "--in-flight", type=int, default=16, help="Qdrant calls in flight (operator and floor)"
    )
    p.add_argument(
        "--stages",
        type=lambda raw: [s for s in raw.split(",") if s],
        default=["cluster", "inplace", "server"],
        help=f"comma-separated, of {','.join(STAGES)} (server needs --qdrant-url; growth "
        "runs only when named)",
    )
    p.add_argument(
        "--growth", type=sizes, default=[100, 1000, 10000], help="sizes of the growth table"
    )
    p.add_argument("--growth-idle", type=float, default=120.0, help="idle seconds per size")
    p.add_argument("--growth-resync", type=float, default=60.0, help="resync during growth")
    p.add_argument("--out", type=Path, default=REPO / "bench-results.json")
    p.add_argument("--operator-env", action="append", default=[], help="KEY=VALUE for the operator")
    p.add_argument("--profile", type=Path, default=None, help="py-spy collapsed stacks here")
    p.add_argument(
        "--workdir", type=Path, default=None, help="keep the planes and operator logs here"
    )
    args = p.parse_args(argv)
    unknown = set(args.stages) - set(STAGES)
    if unknown:
        p.error(f"unknown stages {sorted(unknown)}; known: {', '.join(STAGES)}")

    started = time.perf_counter()
    run_id = uuid.uuid4().hex[:6]
    results: dict[str, Any] = {"environment": unit_bench.environment()}
    results["environment"]["qdrant"] = "embedded (qdrant-client local mode, on disk)"
    with tempfile.TemporaryDirectory(prefix="vectorschema-cluster-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        binaries = build_binaries()
        if "cluster" in args.stages:
            plane = ControlPlane(workdir / "plane", binaries, audit_log=True)
            log("starting the control plane (audit log on)")
            plane.start(timeout=120)
            try:
                results.update(asyncio.run(bench(args, plane, workdir)))
            finally:
                plane.stop()
        if "inplace" in args.stages and args.points > 0:
            log(f"5. in place versus recreate, {args.points:,} points, two 384-dim vectors")
            results.update(bench_inplace(args.points, workdir))
        if "server" in args.stages and args.qdrant_url:
            results.update(asyncio.run(bench_server(args, binaries, workdir, run_id)))
        elif "server" in args.stages:
            log("6. server: skipped (no --qdrant-url / QDRANT_URL)")
        if "growth" in args.stages:
            results.update(asyncio.run(bench_growth(args, binaries, workdir, run_id)))
    results["runtime_s"] = time.perf_counter() - started
    ran = [
        stage
        for stage in args.stages
        if (stage != "server" or args.qdrant_url) and (stage != "inplace" or args.points > 0)
    ]
    write_results(args.out, results, ran)
    keys = [k for k, v in results.items() if isinstance(v, int | float)]
    width = max(map(len, keys))
    for k in keys:
        v = results[k]
        print(f"{k:<{width}}  {v:,.3f}" if isinstance(v, float) else f"{k:<{width}}  {v:,}")
    print(f"results: {args.out}")
    missing = [
        k
        for k in expected_keys(args)
        if not isinstance(results.get(k), int | float) or not math.isfinite(results[k])
    ]
    if missing:
        print(f"bench: figures not written: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
