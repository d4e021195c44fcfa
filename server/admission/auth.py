"""Bearer tokens with scopes, protocol-neutral: HTTP and gRPC front ends ask the same question.

The tokens file (``--auth-tokens-file``) is YAML::

    tokens:
      - token: "a-long-random-string"     # or  sha256: "<hex digest of the token>"
        scopes: [infer, metadata]         # infer, metadata, admin, metrics
        models: [tabular]                 # optional: only these models; every model when absent
        name: ci-client                   # optional: a label for whoever reads the file

Every entry is kept as the SHA-256 digest of its token only. A presented token is hashed once
and compared with every entry's digest with ``hmac.compare_digest`` (no early exit), so the
time taken says nothing about how much of a token matched or which entry it is.

A model-limited token gets 403 for a model it may not use, also when no such model exists, so it
cannot probe which names are served. :class:`TokenFile` reloads the file on SIGHUP and on a poll
(:func:`watching`); a file that fails to parse leaves the previous tokens in force.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import logging
import os
import re
import signal
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

SCOPES = frozenset({"infer", "metadata", "admin", "metrics"})
HEALTH = "health"  # implied for every valid token; asked only when health routes are protected
MIN_TOKEN_LENGTH = 16
_HEX64 = re.compile(r"[0-9a-f]{64}")
_ENTRY_KEYS = frozenset({"token", "sha256", "scopes", "models", "name"})


class AuthError(Exception):
    """A request refused by authentication or authorization (its status: server/core/errors.py)."""


class Unauthorized(AuthError):
    """No token, a malformed Authorization header, or a token not in the file (HTTP 401)."""


class Forbidden(AuthError):
    """A valid token without the scope, or limited to other models (HTTP 403)."""


class TokensFileError(ValueError):
    """The tokens file is unreadable or invalid; the message names the entry and key."""


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class TokenEntry:
    digest: bytes
    scopes: frozenset[str]
    models: frozenset[str] | None  # None: every model
    name: str


def bearer(header: str | bytes | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value (HTTP header or gRPC metadata), else None."""
    if header is None:
        return None
    if isinstance(header, bytes):
        header = header.decode("latin-1")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class Tokens:
    """An immutable set of token entries and the authorization rule."""

    def __init__(self, entries: Iterable[TokenEntry]) -> None:
        self.entries = tuple(entries)

    def identify(self, token: str | None) -> TokenEntry:
        """The entry of ``token``, comparing against every entry in constant time; else Unauthorized."""
        if not token:
            raise Unauthorized("a bearer token is required: send the header 'Authorization: Bearer <token>'")
        presented = digest(token)
        found: TokenEntry | None = None
        for entry in self.entries:  # no early exit: every entry is compared
            if hmac.compare_digest(presented, entry.digest):
                found = entry
        if found is None:
            raise Unauthorized("the bearer token is not valid (unknown, revoked or mistyped)")
        return found

    def authorize(self, token: str | None, scope: str, model: str | None = None) -> TokenEntry:
        """The token's entry if it may use ``scope`` (on ``model``, when given); else Unauthorized/Forbidden."""
        entry = self.identify(token)
        if scope != HEALTH and scope not in entry.scopes:
            raise Forbidden(f"this token lacks the {scope!r} scope (it has: {', '.join(sorted(entry.scopes))})")
        if model is not None and entry.models is not None and model not in entry.models:
            raise Forbidden(f"this token may not use model {model!r}")
        return entry

    @classmethod
    def parse(cls, text: str, source: str = "tokens file") -> Tokens:
        """Tokens from the YAML text of a tokens file; TokensFileError names what is wrong."""
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise TokensFileError(f"{source}: not valid YAML: {error}") from None
        if not isinstance(document, dict) or set(document) != {"tokens"} or not isinstance(document["tokens"], list):
            raise TokensFileError(f"{source}: expected a mapping with one key, 'tokens', holding a list of entries")
        entries = [_entry(raw, f"{source}: tokens[{i}]") for i, raw in enumerate(document["tokens"])]
        seen: set[bytes] = set()
        for i, entry in enumerate(entries):
            if entry.digest in seen:
                raise TokensFileError(f"{source}: tokens[{i}] repeats a token listed before it")
            seen.add(entry.digest)
        return cls(entries)


def _entry(raw: Any, where: str) -> TokenEntry:
    if not isinstance(raw, dict):
        raise TokensFileError(f"{where}: expected a mapping with 'token' or 'sha256', and 'scopes'")
    unknown = set(raw) - _ENTRY_KEYS
    if unknown:
        raise TokensFileError(f"{where}: unknown key {sorted(unknown)[0]!r}; keys: {sorted(_ENTRY_KEYS)}")
    if ("token" in raw) == ("sha256" in raw):
        raise TokensFileError(f"{where}: give exactly one of 'token' and 'sha256'")
    if "token" in raw:
        token = raw["token"]
        if not isinstance(token, str) or len(token) < MIN_TOKEN_LENGTH or token != token.strip() or " " in token:
            raise TokensFileError(f"{where}: 'token' must be a string of at least {MIN_TOKEN_LENGTH} characters "
                                  "without spaces")
        entry_digest = digest(token)
    else:
        hexdigest = raw["sha256"]
        if not isinstance(hexdigest, str) or not _HEX64.fullmatch(hexdigest.lower()):
            raise TokensFileError(f"{where}: 'sha256' must be 64 hexadecimal digits (sha256sum of the token)")
        entry_digest = bytes.fromhex(hexdigest)
    scopes = raw.get("scopes")
    if not isinstance(scopes, list) or not scopes or not all(isinstance(s, str) for s in scopes):
        raise TokensFileError(f"{where}: 'scopes' must be a non-empty list of {sorted(SCOPES)}")
    bad = sorted(set(scopes) - SCOPES)
    if bad:
        raise TokensFileError(f"{where}: unknown scope {bad[0]!r}; scopes: {sorted(SCOPES)}")
    models = raw.get("models")
    if models is not None and (not isinstance(models, list) or not all(isinstance(m, str) and m for m in models)):
        raise TokensFileError(f"{where}: 'models' must be a list of model names (leave it out for every model)")
    name = raw.get("name", "")
    if not isinstance(name, str):
        raise TokensFileError(f"{where}: 'name' must be a string")
    return TokenEntry(entry_digest, frozenset(scopes), frozenset(models) if models is not None else None,
                      name or f"entry {where.rsplit('[', 1)[-1].rstrip(']')}")


class TokenFile:
    """The tokens of a file, reloaded when it changes; ``authorize`` always asks the current ones.

    Loading at start-up raises TokensFileError (the server refuses to start); a later reload that
    fails logs the error and keeps the tokens in force, so a typo never opens or closes the server.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int, int] | None = None
        self.tokens = self._read()

    def _file_stamp(self) -> tuple[int, int, int]:
        st = self.path.stat()
        return st.st_ino, st.st_size, st.st_mtime_ns

    def _read(self) -> Tokens:
        try:
            stamp = self._file_stamp()
            text = self.path.read_text()
        except OSError as error:
            raise TokensFileError(f"tokens file {str(self.path)!r} cannot be read: {error.strerror}") from None
        tokens = Tokens.parse(text, f"tokens file {str(self.path)!r}")
        self._stamp = stamp
        return tokens

    def reload(self, force: bool = False) -> bool:
        """Read the file again if it changed (or ``force``); True when new tokens are in force."""
        try:
            if not force and self._file_stamp() == self._stamp:
                return False
            tokens = self._read()
        except (OSError, TokensFileError) as error:
            log.error("tokens file not reloaded, the previous tokens stay in force: %s", error)
            return False
        self.tokens = tokens
        log.info("tokens file %s reloaded: %d tokens", self.path, len(tokens.entries))
        return True

    def authorize(self, token: str | None, scope: str, model: str | None = None) -> TokenEntry:
        return self.tokens.authorize(token, scope, model)


@contextlib.asynccontextmanager
async def watching(tokens: TokenFile | None, interval: float) -> AsyncIterator[None]:
    """While the block runs, reload ``tokens`` on SIGHUP and when the file changes (checked every
    ``interval`` seconds; 0: on SIGHUP only). Nothing happens without a tokens file."""
    if tokens is None:
        yield
        return
    loop = asyncio.get_running_loop()
    hangup = False
    with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):  # not the main thread, or no SIGHUP
        loop.add_signal_handler(signal.SIGHUP, functools.partial(tokens.reload, force=True))
        hangup = True

    async def poll() -> None:
        while True:
            await asyncio.sleep(interval)
            tokens.reload()

    poller = loop.create_task(poll()) if interval > 0 else None
    try:
        yield
    finally:
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        if hangup:
            loop.remove_signal_handler(signal.SIGHUP)
