"""The backfill contract of a Plugin: the Job that fills its vectors after a schema change.

`Plugin.spec.backfill.jobTemplate` is a batch/v1 JobTemplateSpec, written by the platform
admin (Plugins are cluster-scoped): tenants never choose what runs. The body is kept as
written (the API server validates it as a Job when the operator creates one); the schema
checks what the operator relies on: a Pod template with at least one container of a name
and an image, and a restartPolicy a Job accepts. Imports only pydantic and the api base.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, WithJsonSchema, field_validator

from vectorschema.api.base import CamelModel

_PRESERVE = {"x-kubernetes-preserve-unknown-fields": True}


def _string_map(what: str) -> dict[str, Any]:
    return {
        "description": what,
        "type": "object",
        "additionalProperties": {"description": "A value.", "type": "string"},
    }


#: The structural schema of `jobTemplate` in the CRD: what matters is typed, the rest kept.
JOB_TEMPLATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["spec"],
    "properties": {
        "metadata": {
            "description": "Labels and annotations of the Job (the operator adds its own).",
            "type": "object",
            "properties": {
                "labels": _string_map("Labels of the Job."),
                "annotations": _string_map("Annotations of the Job."),
            },
        },
        "spec": {
            "description": "A batch/v1 JobSpec, run as written.",
            "type": "object",
            "required": ["template"],
            **_PRESERVE,
            "properties": {
                "template": {
                    "description": "The Pod template.",
                    "type": "object",
                    "required": ["spec"],
                    **_PRESERVE,
                    "properties": {
                        "spec": {
                            "description": "The Pod spec; the operator adds the "
                            "VECTORSCHEMA_* and QDRANT_* environment variables to every "
                            "container.",
                            "type": "object",
                            "required": ["containers"],
                            **_PRESERVE,
                            "properties": {
                                "restartPolicy": {
                                    "description": "Never (default) or OnFailure.",
                                    "type": "string",
                                    "enum": ["Never", "OnFailure"],
                                },
                                "containers": {
                                    "description": "At least one container.",
                                    "type": "array",
                                    "minItems": 1,
                                    "items": {
                                        "description": "A container (name and image required).",
                                        "type": "object",
                                        "required": ["name", "image"],
                                        **_PRESERVE,
                                        "properties": {
                                            "name": {
                                                "description": "Container name.",
                                                "type": "string",
                                                "minLength": 1,
                                            },
                                            "image": {
                                                "description": "Container image.",
                                                "type": "string",
                                                "minLength": 1,
                                            },
                                        },
                                    },
                                },
                            },
                        }
                    },
                }
            },
        },
    },
}


class BackfillSpec(CamelModel):
    """How this plugin fills its vectors for the points of a collection (a Job)."""

    job_template: Annotated[
        dict[str, Any],
        WithJsonSchema(JOB_TEMPLATE_SCHEMA),
        Field(
            description="A batch/v1 JobTemplateSpec run in the tenant's Kubernetes namespace "
            "after a plan added, replaced or recreated this plugin's vectors (with "
            "spec.reprocess: Auto)."
        ),
    ]

    @field_validator("job_template")
    @classmethod
    def _a_pod_template(cls, value: dict[str, Any]) -> dict[str, Any]:
        spec = value.get("spec")
        if not isinstance(spec, dict):
            raise ValueError("spec is required (a batch/v1 JobSpec)")
        template = spec.get("template")
        if not isinstance(template, dict) or not isinstance(template.get("spec"), dict):
            raise ValueError("spec.template.spec is required (a Pod spec)")
        pod = template["spec"]
        containers = pod.get("containers")
        if not isinstance(containers, list) or not containers:
            raise ValueError("spec.template.spec.containers must list at least one container")
        for i, c in enumerate(containers):
            if not isinstance(c, dict) or not c.get("name") or not c.get("image"):
                raise ValueError(f"spec.template.spec.containers[{i}]: name and image are required")
        if pod.get("restartPolicy", "Never") not in ("Never", "OnFailure"):
            raise ValueError("spec.template.spec.restartPolicy must be Never or OnFailure")
        meta = value.get("metadata")
        if meta is not None and not isinstance(meta, dict):
            raise ValueError("metadata must be an object")
        return value


class Reprocess(StrEnum):
    """What happens after a plan ran, for the collections to reprocess."""

    MANUAL = "Manual"
    AUTO = "Auto"


class ReprocessState(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    #: The plugin has no spec.backfill: a person re-ingests (the seed's chore).
    MANUAL = "Manual"
