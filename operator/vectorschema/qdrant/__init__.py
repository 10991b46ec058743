"""The Qdrant adapter: the only package that imports qdrant_client.

Holds the `QdrantGateway` protocol (`protocol`: only the calls the operator makes), the
error taxonomy (`errors`: `QdrantUnavailable` retry later, `QdrantRejected` the request is
wrong, `CollectionNotFound` plan again), the pure conversions between `VectorDef` and
qdrant-client models (`convert`), the gateway over one client (`client`), the process-wide
connection pool the gateway knows nothing about (`pool`), and every local-mode shim
(`local`).

May import: qdrant_client, httpx, pydantic, `vectorschema.api`, and the value types of
`vectorschema.core.schema` (the protocol speaks them). Never kopf or kubernetes, never the
rest of `vectorschema.core` (planning, actions, approval, ...), nor the controller.
"""
