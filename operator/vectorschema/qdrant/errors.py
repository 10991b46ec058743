"""What can go wrong talking to Qdrant, as two kinds a person can act on.

`QdrantUnavailable` (retry later) and `QdrantRejected` (the request itself is wrong), plus
`CollectionNotFound` (plan again). `translate` maps qdrant-client's and httpx's exceptions
(transport failures, HTTP statuses) to them, with short messages that never carry the API
key. Local-mode failures are translated in `local`.
"""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit, urlunsplit

import httpx
from pydantic import ValidationError
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse


class GatewayError(Exception):
    """Base of every error the gateway raises; the message is short and safe to show."""


class QdrantUnavailable(GatewayError):
    """Qdrant could not be reached or failed (connection, timeout, 5xx): retry later."""


class QdrantTimeout(QdrantUnavailable):
    """The call ran out of time (the server may be slow rather than down): a count that
    times out is replaced by an estimate."""


class QdrantRejected(GatewayError):
    """Qdrant refused the request (4xx other than not found): retrying will not help."""


class CollectionIsAlias(QdrantRejected):
    """The collection name is an alias on the server. An alias may name a collection of
    another tenant, outside the prefix and ownership checks: it is never followed. The
    message never names the alias's target."""


class CollectionNotFound(GatewayError):
    """A write addressed a collection that does not exist (any more): plan again."""


def translate(exc: Exception, what: str, where: str, collection: str | None) -> GatewayError | None:
    """The gateway error for a failed client call, or None when it is not ours to map.

    `what` is the call ("read the collection"), `where` the server as shown to people.
    """
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, UnexpectedResponse):
        status = exc.status_code
        detail = server_detail(exc)
        if status == 404 and collection is not None:
            # "Not found: Collection `c` doesn't exist!"; a 404 without it is a route
            # this server does not have (the vector endpoints before 1.18)
            if "collection" in detail.lower() and collection in detail:
                return CollectionNotFound(f"collection {collection!r} does not exist in {where}")
            return QdrantRejected(f"{where} cannot {what}: HTTP 404: {detail}")
        if status is None or status >= 500:
            kind = QdrantTimeout if "timeout" in detail.lower() else QdrantUnavailable
            return kind(f"{where} failed to {what}: HTTP {status}: {detail}")
        if status in (401, 403):
            return QdrantRejected(f"{where} refused to {what}: HTTP {status}, check the API key")
        return QdrantRejected(f"{where} could not {what}: {detail}")
    if isinstance(exc, ResponseHandlingException):
        source = exc.source
        if isinstance(source, ValidationError):
            return QdrantUnavailable(f"{where} sent an unexpected answer to {what}")
        return _unreachable(source, what, where)
    if isinstance(exc, httpx.HTTPError | ConnectionError | TimeoutError):
        return _unreachable(exc, what, where)
    return None


def _unreachable(exc: BaseException, what: str, where: str) -> QdrantUnavailable:
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return QdrantTimeout(f"{where} did not answer in time to {what}: timed out")
    return QdrantUnavailable(f"{where} is unreachable: {transport_detail(exc)}")


def server_detail(exc: UnexpectedResponse) -> str:
    """The server's own error text (`{"status": {"error": ...}}`), short."""
    detail = ""
    try:
        body = json.loads(exc.content)
        status = body.get("status") if isinstance(body, dict) else None
        if isinstance(status, dict) and isinstance(status.get("error"), str):
            detail = status["error"]
    except (ValueError, TypeError):
        detail = ""
    if not detail:
        detail = exc.reason_phrase or "no details"
    detail = " ".join(detail.split())
    return detail if len(detail) <= 200 else detail[:197] + "..."


def transport_detail(exc: BaseException) -> str:
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return "timed out"
    if isinstance(exc, httpx.TransportError | OSError):
        text = re.sub(r"\[Errno -?\d+\]\s*", "", str(exc)).strip()
        text = text[:1].lower() + text[1:]
        return text[:200] or type(exc).__name__
    return type(exc).__name__


def redact_url(url: str) -> str:
    """Scheme, host, port and path only: no userinfo, query or fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    except ValueError:
        return "<invalid url>"
