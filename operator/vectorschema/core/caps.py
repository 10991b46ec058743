"""What one tenant may cost everyone else: the admin's caps, as pure functions.

The platform admin sets them (operator environment; the Helm values `limits.*` map to
these variables); a tenant's resource never can. The defaults are generous for real use
and small enough that one tenant cannot exhaust the operator:

| variable | default | caps |
|---|---|---|
| `VECTORSCHEMA_MAX_API_KEY_BYTES` | 4096 | the API key read from a Secret (one line) |
| `VECTORSCHEMA_MAX_NAMESPACES_PER_KUBE_NAMESPACE` | 100 | Namespace resources per namespace |
| `VECTORSCHEMA_MAX_VECTORS` | 64 | named vectors per collection |
| `VECTORSCHEMA_MAX_DIMENSIONS` | 65536 | `size` of a dense or multidense vector |
| `VECTORSCHEMA_MAX_SHARD_NUMBER` | 64 | `spec.shardNumber` |
| `VECTORSCHEMA_MAX_REPLICATION_FACTOR` | 8 | `spec.replicationFactor` |
| `VECTORSCHEMA_MAX_STEPS_PER_PASS` | 64 | in-place steps (Qdrant writes) one plan may take |

A value that does not parse (or is below 1) is reported in `problems` and the default is
used. A refusal names the field it is about and the variable that caps it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, fields

from vectorschema.api import NamespaceSpec
from vectorschema.core.schema import DesiredSchema

MAX_API_KEY_BYTES_ENV = "VECTORSCHEMA_MAX_API_KEY_BYTES"
MAX_NAMESPACES_ENV = "VECTORSCHEMA_MAX_NAMESPACES_PER_KUBE_NAMESPACE"
MAX_VECTORS_ENV = "VECTORSCHEMA_MAX_VECTORS"
MAX_DIMENSIONS_ENV = "VECTORSCHEMA_MAX_DIMENSIONS"
MAX_SHARD_NUMBER_ENV = "VECTORSCHEMA_MAX_SHARD_NUMBER"
MAX_REPLICATION_FACTOR_ENV = "VECTORSCHEMA_MAX_REPLICATION_FACTOR"
MAX_STEPS_ENV = "VECTORSCHEMA_MAX_STEPS_PER_PASS"

_ENV = {
    "api_key_bytes": MAX_API_KEY_BYTES_ENV,
    "namespaces": MAX_NAMESPACES_ENV,
    "vectors": MAX_VECTORS_ENV,
    "dimensions": MAX_DIMENSIONS_ENV,
    "shard_number": MAX_SHARD_NUMBER_ENV,
    "replication_factor": MAX_REPLICATION_FACTOR_ENV,
    "steps": MAX_STEPS_ENV,
}


@dataclass(frozen=True)
class Refused:
    """One cap exceeded: the field, and a message that starts with it."""

    field: str
    message: str


@dataclass(frozen=True)
class Caps:
    """The admin's caps (see the module docstring)."""

    api_key_bytes: int = 4096
    namespaces: int = 100
    vectors: int = 64
    dimensions: int = 65536
    shard_number: int = 64
    replication_factor: int = 8
    steps: int = 64
    #: Settings that did not parse (logged by the caller; the default is used).
    problems: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Caps:
        values: dict[str, int] = {}
        problems: list[str] = []
        for f in fields(cls):
            var = _ENV.get(f.name)
            raw = env.get(var, "").strip() if var is not None else ""
            if not raw or var is None:
                continue
            try:
                value = int(raw)
            except ValueError:
                value = 0
            if value < 1:
                problems.append(f"{var}={raw!r} is not a whole number >= 1; using {f.default}")
                continue
            values[f.name] = value
        return cls(**values, problems=tuple(problems))

    # --- checks ---------------------------------------------------------------------------

    def spec_refusals(self, spec: NamespaceSpec) -> list[Refused]:
        """What the spec alone asks beyond the caps (no Plugin needed)."""
        out: list[Refused] = []
        if spec.shard_number is not None and spec.shard_number > self.shard_number:
            out.append(self._over("spec.shardNumber", spec.shard_number, "shard_number"))
        if spec.replication_factor is not None and (
            spec.replication_factor > self.replication_factor
        ):
            out.append(
                self._over("spec.replicationFactor", spec.replication_factor, "replication_factor")
            )
        return out

    def schema_refusals(self, desired: DesiredSchema) -> list[Refused]:
        """What the resolved vectors ask beyond the caps: their number and dimensions."""
        out: list[Refused] = []
        if len(desired.vectors) > self.vectors:
            out.append(
                Refused(
                    "spec.plugins",
                    f"spec.plugins: the plugins bring {len(desired.vectors)} vectors; a "
                    f"collection may have at most {self.vectors} (the platform admin's limit, "
                    f"{MAX_VECTORS_ENV})",
                )
            )
        for vector in desired.vectors:
            if vector.size is not None and vector.size > self.dimensions:
                origin = ", ".join(desired.origins.get(vector.name, ())) or "?"
                out.append(
                    Refused(
                        "spec.plugins",
                        f"spec.plugins: vector {vector.name} (plugin {origin}) has size "
                        f"{vector.size}; at most {self.dimensions} dimensions are allowed (the "
                        f"platform admin's limit, {MAX_DIMENSIONS_ENV})",
                    )
                )
        return out

    def steps_refusal(self, steps: int) -> Refused | None:
        """A plan of `steps` Qdrant writes, beyond the cap: refused as a whole (nothing of
        it runs; a smaller change, or `strategy: Recreate`, is one the admin allows)."""
        if steps <= self.steps:
            return None
        return Refused(
            "spec.plugins",
            f"spec.plugins: the plan takes {steps} in-place steps; at most {self.steps} are "
            f"allowed in one pass (the platform admin's limit, {MAX_STEPS_ENV}): change fewer "
            "vectors at a time",
        )

    def namespaces_refusal(self, kube_namespace: str, rank: int, total: int) -> Refused | None:
        """The resource that is `rank`-th (0-based, oldest first) of `total` in its
        Kubernetes namespace, beyond the cap: the newest ones are refused."""
        if rank < self.namespaces:
            return None
        return Refused(
            "metadata.namespace",
            f"metadata.namespace: Kubernetes namespace {kube_namespace!r} holds {total} "
            f"Namespace resources; the operator serves at most {self.namespaces} per "
            f"Kubernetes namespace (the platform admin's limit, {MAX_NAMESPACES_ENV}), the "
            "oldest first: delete one to have this one served",
        )

    def _over(self, where: str, value: int, name: str) -> Refused:
        cap = getattr(self, name)
        return Refused(
            where,
            f"{where}: {value} is more than the {cap} the platform admin allows ({_ENV[name]})",
        )


class Ranks:
    """The rank (0-based, oldest first) of each resource in its Kubernetes namespace, for
    the per-namespace cap: the entries (creationTimestamp, name) of a namespace are
    sorted once and kept while their number is unchanged (a resource added or gone
    changes it; `forget` when one goes, in case another came meanwhile), so checking
    every resource of a namespace of n costs one sort, not n. Not thread-safe: used on
    the event loop only."""

    def __init__(self) -> None:
        self._kept: dict[str, tuple[int, dict[str, int]]] = {}
        #: Sorts made (cache misses), since creation.
        self.sorts = 0

    def rank(
        self, namespace: str, name: str, entries: Collection[tuple[str, str]]
    ) -> tuple[int, int]:
        """(rank of `name`, how many) among `entries`, the namespace's current ones; a
        name not among them ranks last."""
        kept = self._kept.get(namespace)
        if kept is None or kept[0] != len(entries):
            ordered = sorted(set(entries))
            self.sorts += 1
            kept = (len(entries), {n: i for i, (_, n) in enumerate(ordered)})
            self._kept[namespace] = kept
        ranks = kept[1]
        return ranks.get(name, len(ranks)), len(ranks)

    def forget(self, namespace: str) -> None:
        self._kept.pop(namespace, None)
