"""A share of the operator's worker threads per tenant.

Passes and releases run on the operator's thread pool (`VECTORSCHEMA_WORKERS`). Before a
pass takes a thread it takes one of its tenant's (Kubernetes namespace's) slots, at most
`per_tenant` of them (`VECTORSCHEMA_WORKERS_PER_TENANT`, default a quarter of the
workers): a namespace with a thousand Namespace resources waits on its own share while the
threads of the pool stay free for the others. The wait is on the event loop, so a waiting
pass holds no thread. A tenant's entry exists only while one of its passes holds or waits
for a slot (`sizes`).

Plain asyncio, kopf-free.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

__all__ = ["TenantShares", "default_share"]


def default_share(workers: int) -> int:
    """A tenant's share when none is set: a quarter of the workers, at least one."""
    return max(1, workers // 4)


class TenantShares:
    """At most `per_tenant` concurrent holders per tenant. Use on one event loop."""

    def __init__(self, per_tenant: int) -> None:
        if per_tenant < 1:
            raise ValueError("per_tenant must be at least 1")
        self.per_tenant = per_tenant
        self._tenants: dict[str, tuple[asyncio.Semaphore, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, tenant: str) -> AsyncIterator[None]:
        sem, users = self._tenants.get(tenant, (None, 0))
        if sem is None:
            sem = asyncio.Semaphore(self.per_tenant)
        self._tenants[tenant] = (sem, users + 1)
        try:
            async with sem:
                yield
        finally:
            sem, users = self._tenants[tenant]
            if users <= 1:
                del self._tenants[tenant]
            else:
                self._tenants[tenant] = (sem, users - 1)

    def in_use(self, tenant: str) -> int:
        """How many hold or wait for `tenant`'s share."""
        return self._tenants.get(tenant, (None, 0))[1]

    def sizes(self) -> dict[str, int]:
        return {"tenant_shares": len(self._tenants)}
