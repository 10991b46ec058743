"""The tenancy policy (core/policy.py): pure functions, no cluster, no Qdrant."""

from __future__ import annotations

import logging

import pytest

from vectorschema.core.policy import (
    APPLIED_PLANS_KEPT,
    REDACTED,
    CollectionNames,
    InvalidKey,
    InvalidUrl,
    Policy,
    Scrubber,
    api_key_from_secret,
    parse_url,
    remember_applied,
)


@pytest.mark.parametrize(
    ("raw", "origin", "prefix"),
    [
        ("http://qdrant:6333", "http://qdrant:6333", ""),
        ("HTTP://Qdrant.Example.COM", "http://qdrant.example.com:6333", ""),
        ("https://q.example.com:443/", "https://q.example.com:443", ""),
        ("https://q.example.com/api/v1/", "https://q.example.com:6333", "/api/v1"),
        ("http://127.0.0.1:1", "http://127.0.0.1:1", ""),
        ("http://[::1]:6333", "http://[::1]:6333", ""),
        ("http://[0:0::1]", "http://[::1]:6333", ""),
        ("http://qdrant.qdrant.svc.:6333", "http://qdrant.qdrant.svc:6333", ""),
    ],
)
def test_urls_normalise_to_one_origin(raw: str, origin: str, prefix: str) -> None:
    url = parse_url(raw)
    assert url.origin == origin
    assert url.prefix == prefix
    assert url.url == origin + prefix


@pytest.mark.parametrize(
    "raw",
    [
        "http://host:99999",
        "http://host:0",
        "http://host:",
        "http://host:6333x",
        "https://a b",
        "http://[::1",
        "http://[::g]:6333",
        "http://bücher.example",
        "http://host\n.example",
        "http://user:pass@host",
        "http://allowed@evil",
        "http://host/?x=1",
        "http://host/#frag",
        "ftp://host",
        "//host",
        "http://",
        "http://-bad-.example",
        "http://256.1.1.1",
        "http://host/a b",
        "http://host\\@evil",
    ],
)
def test_bad_urls_are_refused_with_a_reason(raw: str) -> None:
    with pytest.raises(InvalidUrl) as err:
        parse_url(raw)
    assert str(err.value)


def test_default_policy_allows_only_the_operators_own_qdrant() -> None:
    embedded = Policy.from_env({})
    assert not embedded.url_allowed(parse_url("http://127.0.0.1:6333"))
    remote = Policy.from_env({"QDRANT_URL": "http://Qdrant.qdrant.svc"})
    assert remote.url_allowed(parse_url("http://qdrant.qdrant.svc:6333"))
    assert not remote.url_allowed(parse_url("http://qdrant.qdrant.svc:6334"))
    assert not remote.url_allowed(parse_url("https://qdrant.qdrant.svc:6333"))
    assert remote.secret_label == ("vectorschema.dev/qdrant-credentials", "true")
    assert remote.collection_names is CollectionNames.PREFIXED
    assert embedded.problems == () and remote.problems == ()


def test_the_admin_sets_the_allowlist_label_and_names() -> None:
    policy = Policy.from_env(
        {
            "QDRANT_URL": "http://qdrant:6333",
            "VECTORSCHEMA_ALLOWED_QDRANT_URLS": "https://a.example, http://b:7000, nonsense",
            "VECTORSCHEMA_SECRET_LABEL": "example.com/qdrant=yes",
            "VECTORSCHEMA_COLLECTION_NAMES": "Any",
        }
    )
    assert policy.allowed_origins == {"https://a.example:6333", "http://b:7000"}
    assert not policy.url_allowed(parse_url("http://qdrant:6333"))  # the list replaces it
    assert policy.secret_label == ("example.com/qdrant", "yes")
    assert policy.label_selector == "example.com/qdrant=yes"
    assert policy.collection_names is CollectionNames.ANY
    assert len(policy.problems) == 1 and "ignored" in policy.problems[0]
    assert Policy.from_env({"VECTORSCHEMA_ALLOWED_QDRANT_URLS": "*"}).url_allowed(
        parse_url("http://anything:1")
    )
    assert Policy.from_env({"VECTORSCHEMA_ALLOWED_QDRANT_URLS": ""}).allowed_origins == set()


def test_bad_policy_settings_fall_back_to_the_safe_defaults() -> None:
    policy = Policy.from_env(
        {"VECTORSCHEMA_SECRET_LABEL": "no equals", "VECTORSCHEMA_COLLECTION_NAMES": "anything"}
    )
    assert policy.secret_label == ("vectorschema.dev/qdrant-credentials", "true")
    assert policy.collection_names is CollectionNames.PREFIXED
    assert len(policy.problems) == 2


def test_secrets_need_the_label() -> None:
    policy = Policy()
    assert policy.secret_allowed({"vectorschema.dev/qdrant-credentials": "true"})
    assert not policy.secret_allowed({"vectorschema.dev/qdrant-credentials": "false"})
    assert not policy.secret_allowed({})
    assert not policy.secret_allowed(None)


def test_collection_names_carry_the_tenant_prefix() -> None:
    prefixed = Policy()
    assert prefixed.collection_allowed("team-a", "team-a_search", "team-a_x")
    assert prefixed.collection_allowed("team-a", "team-a_x", "team-a_x")
    assert not prefixed.collection_allowed("team-a", "team-b_search", "team-a_x")
    assert not prefixed.collection_allowed("team-a", "team-a-search", "team-a_x")
    assert not prefixed.collection_allowed("team", "team-a_search", "team_x")
    anything = Policy(collection_names=CollectionNames.ANY)
    assert anything.collection_allowed("team-a", "team-b_search", "team-a_x")


@pytest.mark.parametrize(
    ("raw", "key"),
    [(b"abc-123", "abc-123"), (b"  abc-123\n", "abc-123"), (b"A!~#", "A!~#")],
)
def test_api_keys_are_one_line_of_printable_ascii(raw: bytes, key: str) -> None:
    assert api_key_from_secret(raw) == key


@pytest.mark.parametrize(
    "raw",
    [b"abc\ndef", b"abc def", b"abc\x00def", b"\xff\xfekey", "ключ".encode(), b"", b" \n"],
)
def test_bad_api_keys_are_refused_without_showing_them(raw: bytes) -> None:
    with pytest.raises(InvalidKey) as err:
        api_key_from_secret(raw)
    shown = str(err.value)
    for part in (b"abc", b"def", b"key"):
        if part in raw:
            assert part.decode() not in shown


def test_scrubbing_removes_every_form_of_a_known_secret() -> None:
    scrubber = Scrubber()
    assert scrubber.scrub("nothing known") == "nothing known"
    secret = "k3y-1234\nX-Injected: k3y-1234"
    scrubber.remember(secret)
    scrubber.remember(b"\xff\xfe-binary-secret")
    leaks = [
        f"Illegal header value b'{secret}'",
        f"Illegal header value {secret.encode()!r}",
        f"plain {secret}",
        "just one line: k3y-1234",
        "escaped: k3y-1234\\nX-Injected: k3y-1234",
        "base64: azN5LTEyMzQKWC1JbmplY3RlZDogazN5LTEyMzQ=",
        "binary: \\xff\\xfe-binary-secret",
    ]
    for text in leaks:
        cleaned = scrubber.scrub(text)
        assert "k3y-1234" not in cleaned and "binary-secret" not in cleaned, cleaned
        assert "azN5LTEyMzQ" not in cleaned
        assert REDACTED in cleaned
    assert scrubber.scrub("unrelated text") == "unrelated text"


def test_applied_plans_are_newest_first_once_each_and_bounded() -> None:
    applied: list[str] = []
    for i in range(APPLIED_PLANS_KEPT + 3):
        applied = remember_applied(f"{i:016x}", applied)
    assert len(applied) == APPLIED_PLANS_KEPT
    assert applied[0] == f"{APPLIED_PLANS_KEPT + 2:016x}"
    again = applied[5]
    after = remember_applied(again, applied)
    assert after[0] == again and after.count(again) == 1 and len(after) == len(applied)


def test_policy_module_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    Policy.from_env({"VECTORSCHEMA_ALLOWED_QDRANT_URLS": "bad url"})
    assert not caplog.records
