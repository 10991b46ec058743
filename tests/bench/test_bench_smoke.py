"""`make bench-smoke` (part of `make test`): the benchmarks cannot rot.

Every stage of `bench/run.py` and of `bench/cluster.py` runs at tiny sizes, the server
path against a Qdrant REST server on loopback (`devenv.qdrantlite`, over qdrant-client's
local mode, with an API key: the operator's requests and the floor's go over HTTP), and
each figure the full `make bench` writes must be there, a finite number. Speed is never
asserted here: the goals are in `make bench`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import QdrantClient

from devenv.qdrantlite import Server

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"
sys.path.insert(0, str(BENCH))

import cluster  # noqa: E402  (bench/cluster.py)

GROWTH = [3]
KEY = "bench-smoke-key-0123456789"


def run(argv: list[str], timeout: float, **env_vars: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tools"), str(BENCH)])}
    env.update(env_vars)
    proc = subprocess.run(
        [sys.executable, *argv], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{argv[0]} exited {proc.returncode}:\n{proc.stderr[-4000:]}"
    return proc


def numbers(results: dict[str, Any], keys: list[str]) -> list[str]:
    """The keys whose value is missing or not a finite number."""
    return [
        k
        for k in keys
        if isinstance(results.get(k), bool)
        or not isinstance(results.get(k), int | float)
        or not math.isfinite(results[k])
    ]


def documented_keys(readme: str) -> list[str]:
    """The keys the first column of bench/README.md's key tables names (`growth_<n>_...`
    once per growth size of this run)."""
    keys: list[str] = []
    for line in readme.splitlines():
        if not line.startswith("| `"):
            continue
        first = line.split("|")[1]
        for key in re.findall(r"`([a-z0-9_<>]+)`", first):
            keys += [key.replace("<n>", str(n)) for n in GROWTH] if "<n>" in key else [key]
    return keys


def test_run_py_writes_every_section_and_passes_its_checks(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    argv = ["--points", "50", "--repeats", "1", "--passes", "5", "--calls", "10"]
    run([str(BENCH / "run.py"), *argv, "--out", str(out), "-q"], timeout=120)

    results = json.loads(out.read_text())
    for section in ("add_vector", "resync", "planning"):
        assert numbers(results[section], ["ratio"]) == [], section
    planning = results["planning"]
    assert sum(planning["actions"].values()) == planning["differences"]
    assert results["checks"] and all(results["checks"].values()), results["checks"]


@pytest.mark.e2e
@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
def test_cluster_py_writes_every_figure_on_both_paths(tmp_path: Path) -> None:
    qdrant = Server(api_key=KEY).start()
    out = tmp_path / "bench-results.json"
    out.write_text('{"failover_s": 50.3, "scale_1000_ready_s": -1}\n')  # an earlier run's
    stages = ["cluster", "inplace", "server", "growth"]
    argv = [
        *("--namespaces", "4", "--tenants", "2", "--changes", "3"),
        *("--resync", "1", "--idle", "2", "--points", "100"),
        *("--growth", ",".join(map(str, GROWTH)), "--growth-idle", "2", "--growth-resync", "1"),
        *("--qdrant-url", qdrant.url, "--stages", ",".join(stages), "--out", str(out)),
    ]
    try:
        run([str(BENCH / "cluster.py"), *argv], timeout=480, QDRANT_API_KEY=KEY)
        client = QdrantClient(url=qdrant.url, api_key=KEY, check_compatibility=False)
        left = client.get_collections().collections
        client.close()
    finally:
        qdrant.stop()

    results = json.loads(out.read_text())
    # merged: figures of stages this run did not measure stay (in-cluster failover)
    assert results["failover_s"] == 50.3 and results["scale_1000_ready_s"] != -1
    assert set(results["stages_measured_at"]) == set(stages)
    expected = cluster.expected_keys(
        argparse.Namespace(stages=stages, points=100, qdrant_url=qdrant.url, growth=GROWTH)
    )
    assert set(cluster.SERVER_KEYS) <= set(expected)
    assert numbers(results, expected) == []
    # what the README says the run writes, it writes
    documented = documented_keys((BENCH / "README.md").read_text())
    assert documented, "bench/README.md lists no keys"
    assert numbers(results, documented) == []
    # the server path went over the wire, and left the server as it found it
    assert results["server_requests_per_namespace"] > 0
    assert results["server_floor_requests_per_collection"] > 0
    assert left == []
