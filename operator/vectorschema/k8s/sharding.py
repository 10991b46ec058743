"""This process's shard, and the shard layout lease that fences re-sharding.

The decisions are pure (`vectorschema.core.sharding`); here are the environment and the
coordination.k8s.io/v1 Lease calls. Without `VECTORSCHEMA_SHARD_COUNT` the operator is one
unleased shard and makes no Lease call at all.

Environment:
- `VECTORSCHEMA_SHARD_INDEX`, `VECTORSCHEMA_SHARD_COUNT`: this process's shard.
- `VECTORSCHEMA_SHARD_LEASE_NAME` (default `vectorschema-shard-layout`) and
  `VECTORSCHEMA_SHARD_LEASE_NAMESPACE` (default: `POD_NAMESPACE`, else the service
  account's namespace, else `default`): where the layout lease lives.
- `VECTORSCHEMA_SHARD_LEASE_SECONDS` (default 15): its duration; renewed every third.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from vectorschema.core.sharding import LayoutLease, LeaseRecord, ShardConfig, Step, parse_config
from vectorschema.k8s import kube
from vectorschema.k8s.retries import request_timeout

log = logging.getLogger("vectorschema")

SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def config_from_env(env: Mapping[str, str] = os.environ) -> ShardConfig:
    return parse_config(env)


def lease_name(env: Mapping[str, str] = os.environ) -> str:
    return env.get("VECTORSCHEMA_SHARD_LEASE_NAME") or "vectorschema-shard-layout"


def lease_namespace(env: Mapping[str, str] = os.environ) -> str:
    explicit = env.get("VECTORSCHEMA_SHARD_LEASE_NAMESPACE") or env.get("POD_NAMESPACE")
    if explicit:
        return explicit
    with contextlib.suppress(OSError):
        return SA_NAMESPACE_FILE.read_text().strip() or "default"
    return "default"


def lease_seconds(env: Mapping[str, str] = os.environ) -> float:
    return float(env.get("VECTORSCHEMA_SHARD_LEASE_SECONDS") or 15)


class Gate:
    """Whether this process may act now. Always open for an unleased (unsharded) process;
    otherwise open while our layout holds the lease."""

    def __init__(self, config: ShardConfig, lease: LayoutLease | None) -> None:
        self.config = config
        self.lease = lease
        self.opened = asyncio.Event()
        if lease is None:
            self.opened.set()

    def active(self) -> bool:
        return self.lease is None or self.lease.active(time.monotonic())

    async def wait_active(self, timeout: float) -> bool:
        """Wait (up to `timeout` s) until the gate is open; True if it is."""
        if self.active():
            return True
        self.opened.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.opened.wait(), timeout=timeout)
        return self.active()


def _now_micro() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _record(obj: Any) -> LeaseRecord:
    spec = obj.spec
    renew = spec.renew_time
    return LeaseRecord(
        holder=spec.holder_identity,
        renew_time=renew.isoformat() if renew is not None else None,
        resource_version=obj.metadata.resource_version,
    )


def _read(namespace: str, name: str) -> LeaseRecord | None:
    try:
        obj = kubernetes.client.CoordinationV1Api(kube.api_client()).read_namespaced_lease(
            name, namespace, _request_timeout=request_timeout()
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return _record(obj)


def _write(
    namespace: str, name: str, layout: str, duration: float, record: LeaseRecord | None
) -> None:
    body: dict[str, Any] = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "holderIdentity": layout,
            "leaseDurationSeconds": max(1, round(duration)),
            "renewTime": _now_micro(),
        },
    }
    api = kubernetes.client.CoordinationV1Api(kube.api_client())
    if record is None:
        api.create_namespaced_lease(
            namespace,
            body,  # type: ignore[arg-type]
            _request_timeout=request_timeout(),
        )
    else:
        body["metadata"]["resourceVersion"] = record.resource_version
        api.replace_namespaced_lease(
            name,
            namespace,
            body,  # type: ignore[arg-type]
            _request_timeout=request_timeout(),
        )


async def run_lease(gate: Gate, namespace: str, name: str) -> None:
    """Keep the layout lease for our layout while we run (a task; cancelled at cleanup)."""
    lease = gate.lease
    if lease is None:
        return
    period = lease.duration / 3
    waiting_logged = False
    while True:
        try:
            record = await asyncio.to_thread(_read, namespace, name)
            step = lease.decide(record, time.monotonic())
            if step is Step.WAIT:
                if not waiting_logged:
                    log.info(
                        "shard layout lease %s/%s is held by %s: %s waits",
                        namespace,
                        name,
                        record.holder if record else None,
                        gate.config.name,
                    )
                    waiting_logged = True
            else:
                sent = time.monotonic()
                await asyncio.to_thread(
                    _write, namespace, name, lease.layout, lease.duration, record
                )
                was_active = lease.active(sent)
                lease.written(sent)
                gate.opened.set()
                if not was_active:
                    log.info("%s holds the shard layout lease (%s)", gate.config.name, step.value)
                    waiting_logged = False
        except ApiException as exc:
            if exc.status == 409:  # another member of our layout renewed first: read again
                await asyncio.sleep(0.1)
                continue
            log.warning("shard layout lease: HTTP %s", exc.status)
        except Exception:
            log.exception("shard layout lease")
        await asyncio.sleep(period)
