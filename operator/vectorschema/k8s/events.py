"""Posting a pass's Events through kopf, scrubbed of every known secret value."""

from __future__ import annotations

import kopf

from vectorschema.controller.results import Event
from vectorschema.core.policy import SCRUBBER


def post_event(body: kopf.Body, event: Event) -> None:
    """Post `event` about the object `body` (its message scrubbed)."""
    kopf.event(body, type=event.type, reason=event.reason, message=SCRUBBER.scrub(event.message))
