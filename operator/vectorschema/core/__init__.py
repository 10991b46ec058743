"""The pure domain: what a Namespace asks of its collection, and what to do about it.

Holds the normalised vector schema (`schema`: `VectorDef`, the `Hnsw`/`Quantization` value
types, observed collections and capabilities), the plan actions (`actions`: one frozen
dataclass per kind), planning (`planning`), approval (`approval`), ownership
(`ownership`) and the seed's report (`report`). No I/O: everything here is a function of
its arguments, covered by unit tests without a cluster or a Qdrant.

May import: `vectorschema.api`, pydantic and the standard library. Never kopf,
qdrant_client, kubernetes, nor `vectorschema.qdrant` (which may import `core.schema`'s
value types: the gateway speaks them).
"""
