"""The Qdrant gateway's contract, runnable against any Qdrant.

`make conformance QDRANT_URL=https://my-qdrant:6333 [QDRANT_API_KEY=...]` runs these tests
against that server (what a user runs before an upgrade); `make test` runs them against
the embedded backend (qdrant-client local mode, the operator's default) so they cannot
rot. The make target hands the URL over as `CONFORMANCE_QDRANT_URL` /
`CONFORMANCE_QDRANT_API_KEY`, so a `QDRANT_URL` left in a shell never redirects `make test`.

Each test runs on the backend in use only if that backend has what the test needs
(`@pytest.mark.needs(...)`). What a backend lacks is not skipped: it is deselected at
collection, and the run's summary says which tests and why. The reasons:

| need            | embedded | remote | why                                                   |
|-----------------|----------|--------|-------------------------------------------------------|
| tunes_dense     | no       | yes    | local mode accepts per-vector hnsw/quantization/onDisk |
|                 |          |        | updates and ignores them (capabilities.tunes_vectors) |
| in_place_vectors| yes      | >=1.18 | servers before 1.18 cannot add/remove a named vector  |
| api_key         | no       | if key | a 401 needs a server that has an API key configured   |

Remote runs create collections named `vsconf_<random>_<test>` and delete them afterwards.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from tests.conformance.backends import BACKEND, NEEDS_WHY, Backend

from vectorschema.qdrant.client import ClientGateway


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs(*features): backend features the test needs")


def pytest_report_header(config: pytest.Config) -> str:
    where = BACKEND.url or "qdrant-client local mode (in memory)"
    return f"conformance backend: {BACKEND.name}: {where}; has {sorted(BACKEND.has)}"


_not_applicable: list[tuple[str, str]] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep, drop = [], []
    for item in items:
        needs = {n for m in item.iter_markers("needs") for n in m.args}
        unknown = needs - NEEDS_WHY.keys()
        if unknown:
            raise pytest.UsageError(f"{item.nodeid}: unknown needs {sorted(unknown)}")
        missing = sorted(needs - BACKEND.has)
        if missing:
            drop.append(item)
            why = "; ".join(NEEDS_WHY[n] for n in missing)
            _not_applicable.append((item.nodeid, why))
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _not_applicable:
        terminalreporter.section(f"not applicable to the {BACKEND.name} backend")
        for nodeid, why in _not_applicable:
            terminalreporter.write_line(f"{nodeid}: {why}")


@pytest.fixture
def backend() -> Backend:
    return BACKEND


@pytest.fixture
def gateway() -> Iterator[ClientGateway]:
    g = BACKEND.open()
    yield g
    g.close()


@pytest.fixture
def collection(gateway: ClientGateway, request: pytest.FixtureRequest) -> Iterator[str]:
    """A collection name nobody else uses; whatever the test made there is deleted after."""
    name = f"vsconf_{secrets.token_hex(4)}_{request.node.name}"[:120]
    name = "".join(c if c.isalnum() or c in "_-" else "_" for c in name)
    yield name
    gateway.delete_collection(name)
