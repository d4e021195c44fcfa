"""server.admission.auth: the tokens file, the authorization rule and reloading (no server)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from server.admission.auth import Forbidden, TokenFile, Tokens, TokensFileError, Unauthorized, bearer
from server.core.errors import classify

INFER = "infer-token-0123456789"
ADMIN = "admin-token-0123456789"
HASHED = "hashed-token-0123456789"
TEXT = f"""
tokens:
  - token: {INFER}
    scopes: [infer, metadata]
    models: [tabular]
    name: tabular-client
  - token: {ADMIN}
    scopes: [admin, metrics]
  - sha256: {hashlib.sha256(HASHED.encode()).hexdigest().upper()}
    scopes: [infer]
"""


@pytest.fixture
def tokens() -> Tokens:
    return Tokens.parse(TEXT)


@pytest.mark.parametrize(("token", "scope", "model", "error", "text"), [
    (None, "infer", "tabular", Unauthorized, "bearer token is required"),
    ("", "infer", "tabular", Unauthorized, "bearer token is required"),
    ("wrong-token-0123456789", "infer", "tabular", Unauthorized, "not valid"),
    (INFER[:-1], "infer", "tabular", Unauthorized, "not valid"),
    (INFER, "admin", None, Forbidden, "lacks the 'admin' scope"),
    (INFER, "metrics", None, Forbidden, "lacks the 'metrics' scope"),
    (INFER, "infer", "spam", Forbidden, "may not use model 'spam'"),
    (INFER, "metadata", "no_such_model", Forbidden, "may not use model"),  # no probing of names
    (ADMIN, "infer", "tabular", Forbidden, "lacks the 'infer' scope"),
    (HASHED, "metadata", "tabular", Forbidden, "lacks the 'metadata' scope"),
])
def test_refusals_name_what_is_missing(tokens: Tokens, token: str | None, scope: str, model: str | None,
                                       error: type[Exception], text: str) -> None:
    with pytest.raises(error, match=text) as raised:
        tokens.authorize(token, scope, model)
    assert classify(raised.value).status == (401 if error is Unauthorized else 403)


@pytest.mark.parametrize(("token", "scope", "model", "name"), [
    (INFER, "infer", "tabular", "tabular-client"),
    (INFER, "metadata", "tabular", "tabular-client"),
    (INFER, "metadata", None, "tabular-client"),  # a route of no model (server metadata)
    (ADMIN, "admin", "anything", "entry 1"),
    (ADMIN, "metrics", None, "entry 1"),
    (HASHED, "infer", "spam", "entry 2"),  # a sha256 entry, any model
    (INFER, "health", None, "tabular-client"),  # every valid token may ask for health
])
def test_grants(tokens: Tokens, token: str, scope: str, model: str | None, name: str) -> None:
    assert tokens.authorize(token, scope, model).name == name


def test_entries_keep_only_digests(tokens: Tokens) -> None:
    assert all(len(entry.digest) == 32 for entry in tokens.entries)
    assert INFER not in repr(tokens.entries)


@pytest.mark.parametrize(("header", "token"), [
    ("Bearer abc", "abc"), ("bearer   abc ", "abc"), (b"Bearer abc", "abc"), ("Basic abc", None),
    ("Bearer", None), ("Bearer ", None), ("", None), (None, None), ("abc", None),
])
def test_bearer(header: str | bytes | None, token: str | None) -> None:
    assert bearer(header) == token


@pytest.mark.parametrize(("text", "message"), [
    ("tokens: [", "not valid YAML"),
    ("[]", "one key, 'tokens'"),
    ("tokens: []\nextra: 1", "one key, 'tokens'"),
    ("tokens: [42]", r"tokens\[0\]: expected a mapping"),
    (f"tokens: [{{token: {INFER}, scopes: [infer], model: [a]}}]", "unknown key 'model'"),
    ("tokens: [{scopes: [infer]}]", "exactly one of 'token' and 'sha256'"),
    (f"tokens: [{{token: {INFER}, sha256: {'0' * 64}, scopes: [infer]}}]", "exactly one"),
    ("tokens: [{token: short, scopes: [infer]}]", "at least 16 characters"),
    ("tokens: [{sha256: abc, scopes: [infer]}]", "64 hexadecimal digits"),
    (f"tokens: [{{token: {INFER}}}]", "'scopes' must be a non-empty list"),
    (f"tokens: [{{token: {INFER}, scopes: []}}]", "'scopes' must be a non-empty list"),
    (f"tokens: [{{token: {INFER}, scopes: [write]}}]", "unknown scope 'write'"),
    (f"tokens: [{{token: {INFER}, scopes: [infer], models: tabular}}]", "'models' must be a list"),
    (f"tokens: [{{token: {INFER}, scopes: [infer]}}, {{token: {INFER}, scopes: [admin]}}]",
     r"tokens\[1\] repeats"),
])
def test_invalid_files_are_named(text: str, message: str) -> None:
    with pytest.raises(TokensFileError, match=message):
        Tokens.parse(text)


def test_empty_list_refuses_everyone() -> None:
    with pytest.raises(Unauthorized):
        Tokens.parse("tokens: []").authorize(INFER, "infer")


def test_token_file_reloads_on_change_and_keeps_tokens_on_a_bad_edit(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(TEXT)
    tokens = TokenFile(path)
    assert not tokens.reload()  # unchanged
    tokens.authorize(ADMIN, "admin")

    path.write_text(f"tokens: [{{token: {INFER}, scopes: [admin]}}]")
    os.utime(path, ns=(1, 1))  # a different stamp even within the file system's time resolution
    assert tokens.reload()
    tokens.authorize(INFER, "admin")
    with pytest.raises(Unauthorized):
        tokens.authorize(ADMIN, "admin")  # revoked

    path.write_text("tokens: [{token: short}]")
    os.utime(path, ns=(2, 2))
    assert not tokens.reload()  # logged; the previous tokens stay in force
    tokens.authorize(INFER, "admin")
    path.unlink()
    assert not tokens.reload()
    tokens.authorize(INFER, "admin")


def test_token_file_refuses_to_start_when_unreadable(tmp_path: Path) -> None:
    with pytest.raises(TokensFileError, match="cannot be read"):
        TokenFile(tmp_path / "missing.yaml")
