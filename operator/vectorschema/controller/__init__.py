"""kopf-free orchestration: one reconcile pass, its execution and its status.

Holds the pass over one Namespace (`reconcile`: one `Pass` object per call; `passes`:
read, reconcile, write, as the operator runs it), the executor of plan actions
(`executor`), the release of a collection on deletion (`finalize`), the status writer and
the store port it writes through (`status_writer`), a Plugin's status (`plugin_status`),
the table that maps each failure to its reason and to Stalled or Reconciling (`errors`),
what a pass hands back (`results`) and the crash-test failpoints (`failpoints`).

May import: `vectorschema.api`, `vectorschema.core`, `vectorschema.qdrant` (the gateway
protocol and its errors), pydantic. Never kopf or kubernetes: the Kubernetes calls come in
through `status_writer.NamespaceStore` and a `Connector`, implemented in `vectorschema.k8s`.
"""
