"""Operator settings: the environment it reads, and kopf's configuration in one place."""

from __future__ import annotations

import logging
import os

import kopf

from vectorschema.api import FINALIZER, GROUP


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


def resync_interval() -> float:
    """Seconds between drift checks of one Namespace (`VECTORSCHEMA_RESYNC_SECONDS`)."""
    return _env_float("VECTORSCHEMA_RESYNC_SECONDS", 60.0)


def delete_retries() -> int:
    """Attempts to release a collection before letting the resource go."""
    return int(_env_float("VECTORSCHEMA_DELETE_RETRIES", 5))


def delete_retry_delay() -> float:
    return _env_float("VECTORSCHEMA_DELETE_RETRY_DELAY", 10.0)


def configure_kopf(settings: kopf.OperatorSettings) -> None:
    """All kopf settings in one place."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30
    logging.getLogger("kopf.objects").addFilter(quiet_watchers)


def quiet_watchers(record: logging.LogRecord) -> bool:
    """Drop kopf's per-event "Handler 'x_event' succeeded" lines: the watchers only wake
    control loops, which log what they change."""
    message = record.getMessage()
    return not (message.startswith("Handler '") and "_event' succeeded" in message)
