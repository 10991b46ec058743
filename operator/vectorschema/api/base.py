"""The base of every API model: camelCase on the wire, and the CRD-only schema markers.

Imports only pydantic.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

__all__ = [
    "LIST_MAP_BY_ID",
    "LIST_MAP_BY_NAME",
    "LIST_MAP_BY_TYPE",
    "CamelModel",
    "cel_rule",
    "require_unique",
    "to_camel",
]

# Schema-only annotations for the generated CRDs (see crdgen.py); pydantic ignores them
# when validating. A list-map refuses two items with the same key in the API server, as
# `require_unique` does here; its keys must be required fields without defaults.
LIST_MAP_BY_NAME: JsonDict = {
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["name"],
}
LIST_MAP_BY_ID: JsonDict = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["id"]}
LIST_MAP_BY_TYPE: JsonDict = {
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
}


def cel_rule(rule: str, message: str, field_path: str, reason: str) -> JsonDict:
    """One `x-kubernetes-validations` entry: the API server's twin of a model validator.

    `reason` is FieldValueRequired, FieldValueForbidden or FieldValueInvalid; `field_path`
    is relative to the object carrying the rule, so the error names the offending field.
    """
    return {"rule": rule, "message": message, "fieldPath": field_path, "reason": reason}


class CamelModel(BaseModel):
    """Base: camelCase on the wire, snake_case in Python, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_enum_values=False,
    )

    def to_wire(self) -> dict[str, Any]:
        """The Kubernetes representation: camelCase, no nulls."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def require_unique(values: list[str], field: str, key: str) -> None:
    seen: set[str] = set()
    for i, value in enumerate(values):
        if value in seen:
            raise ValueError(f"{field}[{i}].{key}: duplicate value {value!r}")
        seen.add(value)
