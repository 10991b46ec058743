"""The kopf layer: everything that knows about Kubernetes.

Holds the kopf handlers (`handlers`: decorated functions only), the wake-ups and the
per-Namespace control loop (`wakeups`, state kept in kopf's `memo`), the one connection
policy shared by the operator and the CLI (`connection`), the Kubernetes client adapter
(`kube`), the release of a collection on deletion with its bounded retry (`release`) and
the operator's settings (`settings`).

May import: kopf, kubernetes, and every other vectorschema package below it
(`controller`, `core`, `qdrant`, `api`). Nothing but `vectorschema.cli` imports it.
"""
