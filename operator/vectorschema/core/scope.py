"""Which Namespace resources one operator serves (`Scope`): Kubernetes label selectors,
parsed and matched here (pure), so that two installations can split a cluster.

kopf takes namespace patterns itself (`--namespace`); it has no label-selector option, so
the handlers filter with `Scope.matches`:

- `namespaces` (`VECTORSCHEMA_NAMESPACE_SELECTOR`) matches the labels of the Kubernetes
  namespace the resource lives in. Those are set by the cluster's admins: a tenant cannot
  move its resources to another installation (and its policy) by relabelling anything.
- `objects` (`VECTORSCHEMA_LABEL_SELECTOR`) matches the resource's own labels, which its
  tenant writes: whoever may edit a `vns` picks the installation that serves it. Only
  with the admin's explicit opt-in (`VECTORSCHEMA_OBJECT_LABEL_SCOPE=true`).

The grammar is Kubernetes' own (as `kubectl get -l` takes it): comma-separated
requirements, each `key=value`, `key==value`, `key!=value`, `key in (a,b)`, `key notin
(a,b)`, `key` (exists) or `!key` (does not exist); all must hold.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

# A label key: optional DNS-subdomain prefix and "/", then a name of up to 63 characters.
_KEY = r"(?:[a-z0-9](?:[-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?"
_VALUE = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s+\(([^()]*)\)\s*$")
_EQ = re.compile(rf"^\s*({_KEY})\s*(==|=|!=)\s*({_VALUE})\s*$")
_EXISTS = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")
_VALUE_ONLY = re.compile(rf"^{_VALUE}$")


class Operator(StrEnum):
    IN = "in"
    NOT_IN = "notin"
    EXISTS = "exists"
    DOES_NOT_EXIST = "!"


class SelectorError(ValueError):
    """The text is not a label selector; the message says which part."""


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: Operator
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        match self.operator:
            case Operator.IN:
                return labels.get(self.key) in self.values
            case Operator.NOT_IN:
                return labels.get(self.key) not in self.values
            case Operator.EXISTS:
                return self.key in labels
            case Operator.DOES_NOT_EXIST:
                return self.key not in labels


@dataclass(frozen=True)
class LabelSelector:
    """All requirements must hold; the empty selector matches everything."""

    requirements: tuple[Requirement, ...] = ()

    @classmethod
    def parse(cls, text: str) -> LabelSelector:
        return cls(tuple(_requirement(part) for part in _split(text)))

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        found = labels or {}
        return all(r.matches(found) for r in self.requirements)


@dataclass(frozen=True)
class Scope:
    """The Namespace resources one installation serves: those whose Kubernetes namespace's
    labels match `namespaces`, and (only when the admin opted in) whose own labels match
    `objects`. The empty scope serves everything."""

    namespaces: LabelSelector = LabelSelector()
    objects: LabelSelector = LabelSelector()

    def matches(
        self, namespace_labels: Mapping[str, str] | None, labels: Mapping[str, str] | None
    ) -> bool:
        """Whether a resource labelled `labels` in a namespace labelled `namespace_labels`
        is served; `namespace_labels` None: that namespace is not known (yet)."""
        if self.namespaces.requirements and namespace_labels is None:
            return False
        return self.namespaces.matches(namespace_labels) and self.objects.matches(labels)

    @property
    def by_namespace(self) -> bool:
        return bool(self.namespaces.requirements)


def _split(text: str) -> list[str]:
    """Split at the commas that are not inside parentheses."""
    if not text.strip():
        return []
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if depth != 0:
        raise SelectorError(f"unbalanced parentheses in {text!r}")
    parts.append(current)
    return parts


def _requirement(part: str) -> Requirement:
    if found := _SET.match(part):
        key, op, raw = found.groups()
        values = [v.strip() for v in raw.split(",")]
        if not all(_VALUE_ONLY.match(v) for v in values):
            raise SelectorError(f"invalid value in {part.strip()!r}")
        return Requirement(key, Operator(op), frozenset(values))
    if found := _EQ.match(part):
        key, op, value = found.groups()
        return Requirement(key, Operator.NOT_IN if op == "!=" else Operator.IN, frozenset([value]))
    if found := _EXISTS.match(part):
        bang, key = found.groups()
        return Requirement(key, Operator.DOES_NOT_EXIST if bang else Operator.EXISTS)
    raise SelectorError(f"not a label requirement: {part.strip()!r}")
