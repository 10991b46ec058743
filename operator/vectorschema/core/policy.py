"""Tenancy policy: what a tenant's Namespace may name, as pure functions.

The platform admin sets the policy (operator environment, Helm values map to it); a
tenant's resource never can. With no configuration at all the defaults are safe:

- `VECTORSCHEMA_ALLOWED_QDRANT_URLS`: comma-separated origins (`scheme://host[:port]`) a
  `spec.qdrant.url` may name; `*` allows any. Default: only the origin of the operator's
  own `QDRANT_URL` (none when the operator runs the embedded Qdrant).
- `VECTORSCHEMA_SECRET_LABEL` (`key=value`, default `vectorschema.dev/qdrant-credentials=true`):
  only Secrets with this label may be referenced by `spec.qdrant.apiKeySecretRef`.
- `VECTORSCHEMA_COLLECTION_NAMES`: `Prefixed` (default; a non-default `spec.collectionName`
  starts with `<kubernetes namespace>_`) or `Any`.

A URL is parsed here once, strictly (ASCII, no whitespace, no user info, query or
fragment, a DNS name or IP literal, a port in range), and the client is built from the
parsed parts, so what was checked is exactly what is connected to. Qdrant's default port
(6333, what qdrant-client uses when a URL names none) is made explicit before comparing.

Also here: API-key validation and scrubbing of known secret values from any text that may
reach a status, a log line or an Event.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from vectorschema.api.status import APPLIED_PLANS_KEPT

ALLOWED_URLS_ENV = "VECTORSCHEMA_ALLOWED_QDRANT_URLS"
SECRET_LABEL_ENV = "VECTORSCHEMA_SECRET_LABEL"
COLLECTION_NAMES_ENV = "VECTORSCHEMA_COLLECTION_NAMES"
DEFAULT_SECRET_LABEL = ("vectorschema.dev/qdrant-credentials", "true")
#: The port qdrant-client connects to when a URL names none.
QDRANT_DEFAULT_PORT = 6333
ANY_URL = "*"

_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_PATH = re.compile(r"^(/[A-Za-z0-9._~-]+)*/?$")
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


class CollectionNames(StrEnum):
    PREFIXED = "Prefixed"
    ANY = "Any"


class InvalidUrl(ValueError):
    """A URL that cannot be a Qdrant server address; the message says why (no secrets)."""


@dataclass(frozen=True)
class QdrantUrl:
    """A parsed, validated Qdrant URL: what the client is built from."""

    scheme: str
    host: str  # lowercase; an IPv6 literal without brackets
    port: int
    prefix: str = ""  # "" or "/a/b"

    @property
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def url(self) -> str:
        return self.origin + self.prefix

    @property
    def https(self) -> bool:
        return self.scheme == "https"


def parse_url(raw: str) -> QdrantUrl:
    """Parse `raw` strictly; raises InvalidUrl (the message quotes only safe parts)."""
    if not raw.isascii():
        raise InvalidUrl("the URL must be ASCII (write an internationalised host as punycode)")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in raw):
        raise InvalidUrl("the URL must not contain whitespace or control characters")
    match = re.fullmatch(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)([^?#]*)(\?[^#]*)?(#.*)?", raw)
    if match is None:
        raise InvalidUrl("expected scheme://host[:port][/prefix]")
    scheme, authority, path, query, fragment = match.groups()
    scheme = scheme.lower()
    if scheme not in ("http", "https"):
        raise InvalidUrl(f"scheme {scheme!r} is not http or https")
    if query is not None or fragment is not None:
        raise InvalidUrl("a query or fragment is not allowed")
    if "@" in authority:
        raise InvalidUrl("user info (user:password@) is not allowed; use apiKeySecretRef")
    host, port = _split_host_port(authority)
    if not _PATH.fullmatch(path):
        raise InvalidUrl("the path prefix may hold only letters, digits and . _ ~ -")
    return QdrantUrl(scheme, host, port, path.rstrip("/"))


def _split_host_port(authority: str) -> tuple[str, int]:
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise InvalidUrl("an IPv6 host needs a closing ']'")
        literal, rest = authority[1:end], authority[end + 1 :]
        try:
            host = ipaddress.IPv6Address(literal).compressed
        except ValueError:
            raise InvalidUrl("the IPv6 host is not a valid address") from None
    else:
        literal, sep, port_part = authority.partition(":")
        rest = sep + port_part
        host = literal.lower().rstrip(".")
        if not host:
            raise InvalidUrl("the URL has no host")
        if not _valid_hostname(host):
            raise InvalidUrl("the host is not a valid DNS name or IP address")
    if not rest:
        return host, QDRANT_DEFAULT_PORT
    if not rest.startswith(":") or not rest[1:].isdigit() or len(rest) > 6:
        raise InvalidUrl("the port must be a number from 1 to 65535")
    port = int(rest[1:])
    if not 1 <= port <= 65535:
        raise InvalidUrl("the port must be a number from 1 to 65535")
    return host, port


def _valid_hostname(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
        return True
    except ValueError:
        pass
    if len(host) > 253:
        return False
    labels = host.split(".")
    if all(label.isdigit() for label in labels):
        return False  # looks like IPv4 but is not one
    return all(_DNS_LABEL.fullmatch(label) for label in labels)


# --- the admin's policy -------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """The admin's tenancy policy (see the module docstring)."""

    allowed_origins: frozenset[str] = frozenset()
    any_url: bool = False
    secret_label: tuple[str, str] = DEFAULT_SECRET_LABEL
    collection_names: CollectionNames = CollectionNames.PREFIXED
    #: Configuration problems found while reading the policy (logged by the caller).
    problems: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Policy:
        problems: list[str] = []
        origins: set[str] = set()
        any_url = False
        raw_urls = env.get(ALLOWED_URLS_ENV)
        if raw_urls is None:
            default = env.get("QDRANT_URL") or ""
            entries = [default] if default else []
        else:
            entries = [e.strip() for e in raw_urls.split(",") if e.strip()]
        for entry in entries:
            if entry == ANY_URL:
                any_url = True
                continue
            try:
                origins.add(parse_url(entry).origin)
            except InvalidUrl as exc:
                problems.append(f"{ALLOWED_URLS_ENV}: entry ignored: {exc}")

        label = DEFAULT_SECRET_LABEL
        raw_label = env.get(SECRET_LABEL_ENV)
        if raw_label:
            key, sep, value = raw_label.strip().partition("=")
            if sep and _LABEL_KEY.fullmatch(key) and _LABEL_VALUE.fullmatch(value):
                label = (key, value)
            else:
                problems.append(
                    f"{SECRET_LABEL_ENV}={raw_label!r} is not key=value; using "
                    f"{DEFAULT_SECRET_LABEL[0]}={DEFAULT_SECRET_LABEL[1]}"
                )

        names = CollectionNames.PREFIXED
        raw_names = env.get(COLLECTION_NAMES_ENV)
        if raw_names:
            try:
                names = CollectionNames(raw_names.strip())
            except ValueError:
                problems.append(f"{COLLECTION_NAMES_ENV}={raw_names!r} is not Prefixed or Any")
        return cls(frozenset(origins), any_url, label, names, tuple(problems))

    @property
    def label_selector(self) -> str:
        return f"{self.secret_label[0]}={self.secret_label[1]}"

    def url_allowed(self, url: QdrantUrl) -> bool:
        return self.any_url or url.origin in self.allowed_origins

    def secret_allowed(self, labels: Mapping[str, str] | None) -> bool:
        key, value = self.secret_label
        return (labels or {}).get(key) == value

    def collection_allowed(self, kube_namespace: str, collection: str, default: str | None) -> bool:
        """Whether a Namespace in `kube_namespace` may use `collection` by name (`default`:
        its default name, None when its names cannot make one)."""
        if self.collection_names is CollectionNames.ANY or collection == default:
            return True
        return collection.startswith(f"{kube_namespace}_")

    def collection_refusal(
        self, kube_namespace: str, collection: str, default: str | None
    ) -> str | None:
        """Why a Namespace in `kube_namespace` may not use `collection` (None: it may);
        what the reconcile stalls with and the admission webhook refuses with."""
        if self.collection_allowed(kube_namespace, collection, default):
            return None
        return (
            f"spec.collectionName: {collection!r} must start with '{kube_namespace}_' (the "
            f"collections of Kubernetes namespace {kube_namespace!r} carry its prefix; the "
            "platform admin sets this rule), or leave it unset for the default name"
        )


# --- API keys -------------------------------------------------------------------------------


class InvalidKey(ValueError):
    """An API key that cannot be sent; the message never contains the key."""


#: The longest API key the operator reads, unless the admin sets another
#: (`VECTORSCHEMA_MAX_API_KEY_BYTES`, `core.caps`): a key is sent as a header on every call.
MAX_API_KEY_BYTES = 4096


def api_key_from_secret(raw: bytes, max_bytes: int = MAX_API_KEY_BYTES) -> str:
    """The API key in a Secret's value: printable ASCII, no whitespace inside, at most
    `max_bytes` long.

    Surrounding whitespace (a trailing newline from `echo`) is dropped. Raises InvalidKey.
    """
    if len(raw) > max_bytes and len(raw.strip()) > max_bytes:
        raise InvalidKey(
            f"the value is {len(raw)} bytes; an API key may have at most {max_bytes} (the "
            "platform admin's limit, VECTORSCHEMA_MAX_API_KEY_BYTES)"
        )
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidKey("the value is not ASCII text") from None
    key = text.strip()
    if not key:
        raise InvalidKey("the value is empty")
    if any(not 0x21 <= ord(c) <= 0x7E for c in key):
        raise InvalidKey(
            "the value holds whitespace or control characters (an API key is one line of "
            "printable ASCII)"
        )
    return key


# --- scrubbing --------------------------------------------------------------------------------

REDACTED = "<redacted>"
#: How many secret values the process remembers for scrubbing (most recent kept).
MAX_SECRETS = 1024
#: How many bytes of secret forms it keeps (most recent kept): what one tenant's keys can
#: cost in memory and in scrubbing time is bounded, however many or long they are.
MAX_SECRET_BYTES = 256 * 1024
#: Forms shorter than this are not kept (they would redact ordinary words).
MIN_FORM = 4


def secret_forms(value: str | bytes) -> set[str]:
    """The ways a secret value may show up in text: itself, its lines, its repr and
    escaped forms, its base64 (fragments shorter than 4 characters are not kept)."""
    raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    text = raw.decode("utf-8", "replace")
    forms = {text, text.strip(), repr(text)[1:-1], repr(raw)[2:-1]}
    forms.add(base64.b64encode(raw).decode())
    forms.update(line.strip() for line in re.split(r"[\r\n\x00]+", text))
    return {f for f in forms if len(f) >= MIN_FORM}


class Scrubber:
    """Known secret values, and text with every one of them replaced. Thread-safe.

    Bounded: at most `max_values` forms and `max_bytes` bytes of them. Each value is kept
    for the tenant (Kubernetes namespace) whose Secret it came from; past the bounds, the
    oldest form of the tenant that holds the most bytes goes first, so one tenant's many
    or long keys evict its own, never another tenant's smaller set (pinned values, the
    operator's own key, never go). Scrubbing looks each position of the text up by its
    first four characters (a dict), so its cost grows with the text, not with the number
    of keys known (one regex over every key did)."""

    def __init__(self, max_values: int = MAX_SECRETS, max_bytes: int = MAX_SECRET_BYTES) -> None:
        self.max_values = max_values
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        #: tenant -> its forms, insertion-ordered (oldest first)
        self._tenants: dict[str, dict[str, None]] = {}
        self._tenant_bytes: dict[str, int] = {}
        self._refs: dict[str, int] = {}  # form -> how many tenants hold it
        self._pinned: set[str] = set()
        self._bytes = 0  # of the forms held, once each
        #: first four characters -> the forms starting with them, longest first
        self._index: dict[str, tuple[str, ...]] = {}

    @property
    def size(self) -> tuple[int, int]:
        """(forms kept, bytes kept)."""
        with self._lock:
            return len(self._refs) + len(self._pinned - self._refs.keys()), self._bytes

    def remember(self, value: str | bytes | None, *, pin: bool = False, tenant: str = "") -> None:
        """Keep `value`'s forms for scrubbing, as `tenant`'s (the Kubernetes namespace of
        its Secret), or for good (`pin`)."""
        if not value:
            return
        forms = secret_forms(value)
        with self._lock:
            if pin:
                if forms <= self._pinned:
                    return
                self._bytes += sum(len(f) for f in forms - self._pinned - self._refs.keys())
                self._pinned |= forms
            else:
                held = self._tenants.setdefault(tenant, {})
                if forms <= held.keys():
                    return  # known already (every pass reads the same key again)
                for form in forms - held.keys():
                    held[form] = None
                    self._tenant_bytes[tenant] = self._tenant_bytes.get(tenant, 0) + len(form)
                    if form not in self._refs and form not in self._pinned:
                        self._bytes += len(form)
                    self._refs[form] = self._refs.get(form, 0) + 1
                self._evict()
            index: dict[str, list[str]] = {}
            for form in self._refs.keys() | self._pinned:
                index.setdefault(form[:MIN_FORM], []).append(form)
            self._index = {k: tuple(sorted(v, key=len, reverse=True)) for k, v in index.items()}

    def _evict(self) -> None:
        while self._tenants and (len(self._refs) > self.max_values or self._bytes > self.max_bytes):
            tenant = max(self._tenant_bytes, key=lambda t: self._tenant_bytes[t])
            held = self._tenants[tenant]
            form = next(iter(held))
            del held[form]
            self._tenant_bytes[tenant] -= len(form)
            if not held:
                del self._tenants[tenant], self._tenant_bytes[tenant]
            self._refs[form] -= 1
            if not self._refs[form]:
                del self._refs[form]
                if form not in self._pinned:
                    self._bytes -= len(form)

    def scrub(self, text: str) -> str:
        index = self._index
        if not index or not text:
            return text
        out: list[str] = []
        start = i = 0
        end = len(text) - MIN_FORM + 1
        while i < end:
            candidates = index.get(text[i : i + MIN_FORM])
            if candidates is not None:
                for form in candidates:
                    if text.startswith(form, i):
                        out.append(text[start:i])
                        out.append(REDACTED)
                        i += len(form)
                        start = i
                        break
                else:
                    i += 1
                continue
            i += 1
        if not out:
            return text
        out.append(text[start:])
        return "".join(out)

    def scrub_all(self, texts: Iterable[str]) -> list[str]:
        return [self.scrub(t) for t in texts]


#: The process's scrubber: every API key the operator reads is remembered here.
SCRUBBER = Scrubber()


# --- approvals ----------------------------------------------------------------------------------


def remember_applied(fingerprint: str, applied: Iterable[str]) -> list[str]:
    """status.appliedPlans after applying `fingerprint`: newest first, each once, bounded."""
    rest = [fp for fp in applied if fp != fingerprint]
    return [fingerprint, *rest][:APPLIED_PLANS_KEPT]
