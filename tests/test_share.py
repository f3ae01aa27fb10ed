"""Share links: exact round trip for every preset; garbage links fail fast with DesignError."""
from __future__ import annotations

import base64
import json
import os
import random
import time
import zlib
from urllib.parse import parse_qs, urlsplit

import pytest

from backend.errors import DesignError
from backend.presets import list_presets
from backend.spec import load_preset
from backend.share import MAX_JSON_BYTES, MAX_TOKEN_CHARS, PARAM, decode_design, encode_design, share_url
from backend.spec import load_design

TINY = {"name": "share-demo", "description": "ünïcode ✓", "hidden_size": 32, "n_heads": 4, "vocab_size": 100, "max_seq_len": 64,
        "layers": {"n_layers": 4, "rules": [{"when": {"every": 2, "offset": 1}, "mlp": "geglu"}]}}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


@pytest.mark.parametrize("preset", list_presets())
def test_round_trip_every_preset(preset):
    try:
        design = load_preset(preset)
    except DesignError as exc:  # presets are being added concurrently; their own tests catch this
        pytest.fail(f"preset does not load: {exc}")
    token = encode_design(design)
    assert len(token) <= MAX_TOKEN_CHARS
    assert set(token[2:]) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert decode_design(token) == design
    assert decode_design(share_url("https://designer.example/", design)) == design


def test_round_trip_and_url():
    design = load_design(TINY)
    token = encode_design(design)
    assert token.startswith("1.") and "=" not in token
    assert decode_design(token) == design
    assert decode_design(token).to_dict() == design.to_dict()
    url = share_url("http://host:8501/?page=library&d=stale#top", design)
    parts = urlsplit(url)
    q = parse_qs(parts.query)
    assert q[PARAM] == [token] and q["page"] == ["library"] and parts.fragment == "top"
    assert decode_design(url) == design
    assert decode_design(f"  {token}\n") == design  # pasted with whitespace


def _garbage() -> dict[str, str]:
    rng = random.Random(7)
    token = encode_design(load_design(TINY))
    bomb = zlib.compress(b'{"name":"' + b"a" * (16 << 20) + b'"}', 9)  # 16 MiB of JSON in ~16 KB
    bomb_token = "1." + _b64(bomb[: (MAX_TOKEN_CHARS - 100) * 3 // 4])  # fits the length limit; inflates past the cap
    return {
        "empty": "",
        "no version": "eJxLTEoGAAJNASc",
        "unknown version": "9." + token[2:],
        "random bytes": "1." + _b64(bytes(rng.randrange(256) for _ in range(600))),
        "random text": "".join(rng.choice("abc!@#$%^&*()é\x00") for _ in range(200)),
        "bad base64": "1.***not-base64***",
        "truncated": token[: len(token) // 2],
        "truncated on a 4-char boundary": "1." + token[2:][: (len(token) - 2) // 8 * 4],
        "trailing data": "1." + _b64(zlib.compress(json.dumps(TINY).encode()) + b"xx"),
        "huge": "1." + "A" * (10 * MAX_TOKEN_CHARS),
        "zip bomb": bomb_token,
        "not json": "1." + _b64(zlib.compress(b"name: yaml, not json")),
        "json list": "1." + _b64(zlib.compress(b"[1, 2, 3]")),
        "deep json": "1." + _b64(zlib.compress(b"[" * 100_000 + b"]" * 100_000, 9)),
        "invalid design": "1." + _b64(zlib.compress(json.dumps({**TINY, "hidden_size": -1}).encode())),
        "unknown key": "1." + _b64(zlib.compress(json.dumps({**TINY, "hiden_size": 3}).encode())),
        "url without d": "https://host/?x=1",
    }


@pytest.mark.parametrize("kind", list(_garbage()))
def test_garbage_links_give_design_error_quickly(kind):
    link = _garbage()[kind]
    t0 = time.process_time()  # CPU time: a busy machine can't flake it
    with pytest.raises(DesignError) as info:
        decode_design(link)
    assert time.process_time() - t0 < 0.5
    msg = str(info.value)
    assert msg.startswith("share link") and "\n" not in msg


def test_zip_bomb_is_refused_by_the_size_cap():
    bomb = zlib.compress(b" " * (10 << 20), 9)  # 10 MiB of JSON whitespace in ~10 KB (deflate tops out near 1000:1)
    token = "1." + _b64(bomb)
    assert len(token) <= MAX_TOKEN_CHARS  # the link length check alone would let it through
    with pytest.raises(DesignError, match=f"more than {MAX_JSON_BYTES} bytes"):
        decode_design(token)


def test_invalid_design_message_names_the_field():
    token = "1." + _b64(zlib.compress(json.dumps({**TINY, "hidden_size": -1}).encode()))
    with pytest.raises(DesignError, match=r"hidden_size: must be >= 1"):
        decode_design(token)


def test_oversized_design_cannot_be_encoded():
    # Incompressible description text: the token would exceed the link limit.
    rng = random.Random(1)
    text = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(19_000))
    with pytest.raises(DesignError, match="too large to share"):
        encode_design({**TINY, "description": text})


def test_random_fuzz_never_raises_anything_else():
    rng = random.Random(os.getpid())
    token = encode_design(load_design(TINY))
    for _ in range(300):
        chars = list(token)
        for _ in range(rng.randint(1, 5)):
            chars[rng.randrange(2, len(chars))] = rng.choice("ABCxyz019-_")
        try:
            decode_design("".join(chars))
        except DesignError:
            pass
