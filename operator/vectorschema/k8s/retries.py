"""Timeouts and retries for the Kubernetes calls the operator makes itself.

kopf's own calls (watches, its patches, Events) have kopf's timeouts and retries. The calls
in `kube.py` (read a Namespace, write its status, remove the approval annotation, read a
Secret) go through the kubernetes client, which waits forever by default: an API server
that accepts the connection and never answers would block that resource's loop for good.
So every one of them:

- carries `_request_timeout=(connect, read)` (`VECTORSCHEMA_KUBE_TIMEOUT`, default 30 s
  read, like kopf's `networking.request_timeout` set in `configure`; 5 s to connect);
- is retried on what kopf also retries: HTTP 429 and 5xx, timeouts and dropped
  connections; waits are tenacity's full jitter (0.5 s doubling, at most 5 s each), at
  most `ATTEMPTS` tries. Anything else (404, 409, 403, 422) is an answer and is raised at
  once. A call still failing after its tries raises `KubeUnavailable`, which the control
  loop retries on its `unavailable` backoff schedule.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import tenacity
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

__all__ = ["ATTEMPTS", "KubeUnavailable", "request_timeout", "retried"]

P = ParamSpec("P")
T = TypeVar("T")

ATTEMPTS = 3
CONNECT_TIMEOUT = 5.0
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})


class KubeUnavailable(Exception):
    """The Kubernetes API did not answer usefully after the retries (timeouts, 5xx, 429)."""


def request_timeout() -> tuple[float, float]:
    """(connect, read) seconds for one request."""
    raw = os.environ.get("VECTORSCHEMA_KUBE_TIMEOUT")
    read = float(raw) if raw else 30.0
    return (min(CONNECT_TIMEOUT, read), read)


def transient(exc: BaseException) -> bool:
    if isinstance(exc, ApiException):
        return exc.status in RETRIED_STATUSES or exc.status == 0
    return isinstance(
        exc,
        urllib3.exceptions.HTTPError | ConnectionError | TimeoutError,
    )


def _describe(exc: BaseException | None) -> str:
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason or ''}".strip()
    if isinstance(exc, urllib3.exceptions.TimeoutError | TimeoutError):
        return "timed out"
    return type(exc).__name__ if exc is not None else "unknown error"


def retried(
    fn: Callable[P, T], *, attempts: int = ATTEMPTS, wait_max: float = 5.0
) -> Callable[P, T]:
    """`fn` retried on transient failures; `KubeUnavailable` when they persist."""
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(transient),
        stop=tenacity.stop_after_attempt(attempts),
        wait=tenacity.wait_random_exponential(multiplier=0.5, max=wait_max),
        reraise=False,
    )

    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return retrying(fn, *args, **kwargs)
        except tenacity.RetryError as exc:
            last = exc.last_attempt.exception()
            error = KubeUnavailable(
                f"the Kubernetes API failed {attempts} times ({getattr(fn, '__name__', 'call')}): "
                f"{_describe(last)}"
            )
        raise error

    return call


def with_timeout(kwargs: dict[str, Any]) -> dict[str, Any]:
    """`kwargs` plus the request timeout, for a kubernetes client call."""
    return {**kwargs, "_request_timeout": request_timeout()}
