"""Share links: a whole design packed into one URL query parameter.

Token format (version 1)::

    "1." + base64url_nopad(zlib.compress(compact_json(design without defaults), level=9))

Only fields that differ from their defaults are written, so a typical design
is a few hundred characters. :func:`share_url` puts the token in the query
parameter ``d``; the app reads ``st.query_params["d"]`` and calls
:func:`decode_design`.

Decoding never trusts the link: it is rejected when the token is longer than
:data:`MAX_TOKEN_CHARS`, and the JSON is inflated with a bounded
``decompressobj`` that stops at :data:`MAX_JSON_BYTES`, so a zip bomb costs
at most that much memory. Every failure (oversized, corrupt base64, bad
deflate data, bad JSON, an invalid design) is a
:class:`~backend.errors.DesignError` with a message a user can act on.
"""
from __future__ import annotations

import base64
import binascii
import json
import zlib
from typing import Any, Union
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .errors import DesignError
from .spec import Design, design_from_dict, load_design

VERSION = "1"
PARAM = "d"
# 16 000 characters keeps a link under the 16 KiB request-line limits of common
# proxies; real designs need well under 2 000. Inflated JSON is capped at 1 MiB.
MAX_TOKEN_CHARS = 16_000
MAX_JSON_BYTES = 1 << 20
_SOURCE = "share link"


def _compact_json(design: Design) -> bytes:
    return json.dumps(design.to_dict(exclude_defaults=True), separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def encode_design(design: Union[Design, dict, str]) -> str:
    """The share token of ``design``; a DesignError if it would exceed :data:`MAX_TOKEN_CHARS`."""
    design = load_design(design)
    packed = zlib.compress(_compact_json(design), 9)
    token = f"{VERSION}.{base64.urlsafe_b64encode(packed).decode('ascii').rstrip('=')}"
    if len(token) > MAX_TOKEN_CHARS:
        raise DesignError(_SOURCE, f"design is too large to share as a link ({len(token)} characters, limit {MAX_TOKEN_CHARS}); "
                                   "save it to the library or export a file instead")
    return token


def decode_design(token: str) -> Design:
    """The design in a share token (or in a whole URL with a ``d=`` parameter)."""
    if not isinstance(token, str):
        raise DesignError(_SOURCE, f"must be text, got {type(token).__name__}")
    token = token.strip()
    if len(token) > MAX_TOKEN_CHARS + 4096:  # before any parsing: cheap rejection of huge input
        raise DesignError(_SOURCE, f"is {len(token)} characters; share links are limited to {MAX_TOKEN_CHARS}")
    if "://" in token or token.startswith("?") or f"{PARAM}=" in token:
        token = _token_from_url(token)
    if len(token) > MAX_TOKEN_CHARS:
        raise DesignError(_SOURCE, f"is {len(token)} characters; share links are limited to {MAX_TOKEN_CHARS}")
    if not token:
        raise DesignError(_SOURCE, "is empty")
    version, sep, body = token.partition(".")
    if not sep:
        raise DesignError(_SOURCE, "is not a design link (expected '<version>.<data>'); was it cut off or edited?")
    if version != VERSION:
        raise DesignError(_SOURCE, f"has format version {version[:10]!r}; this version of the tool reads version {VERSION}")
    try:
        packed = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        if base64.urlsafe_b64encode(packed).decode("ascii").rstrip("=") != body:
            raise ValueError("non-canonical")
    except (binascii.Error, ValueError):
        raise DesignError(_SOURCE, "is corrupt (not valid base64url); copy the whole link again") from None
    raw = _inflate(packed)
    try:
        data: Any = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise DesignError(_SOURCE, "is corrupt (the data inside is not valid JSON)") from None
    except RecursionError:
        raise DesignError(_SOURCE, "is nested too deeply") from None
    try:
        return design_from_dict(data)
    except DesignError as exc:
        raise DesignError(f"{_SOURCE}: {exc.path}", exc.message) from None


def _inflate(packed: bytes) -> bytes:
    d = zlib.decompressobj()
    try:
        raw = d.decompress(packed, MAX_JSON_BYTES + 1)  # bounded: a zip bomb stops here
    except zlib.error:
        raise DesignError(_SOURCE, "is corrupt (compressed data is damaged); copy the whole link again") from None
    if len(raw) > MAX_JSON_BYTES or d.unconsumed_tail:
        raise DesignError(_SOURCE, f"expands to more than {MAX_JSON_BYTES} bytes; refusing it")
    if not d.eof:
        raise DesignError(_SOURCE, "is truncated (compressed data ends early); copy the whole link again")
    if d.unused_data:
        raise DesignError(_SOURCE, "is corrupt (extra data after the design)")
    return raw


def _token_from_url(url: str) -> str:
    query = urlsplit(url).query if "://" in url else url.lstrip("?")
    values = [v for k, v in parse_qsl(query, keep_blank_values=True) if k == PARAM]
    if not values:
        raise DesignError(_SOURCE, f"has no '{PARAM}=' parameter")
    return values[-1].strip()


def share_url(base_url: str, design: Union[Design, dict, str]) -> str:
    """``base_url`` with ``?d=<token>`` (other query parameters kept, an old ``d`` replaced)."""
    token = encode_design(design)
    parts = urlsplit(base_url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != PARAM]
    query.append((PARAM, token))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))
