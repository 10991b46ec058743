"""vectorschema: declarative Qdrant vector schemas for Kubernetes tenants."""
