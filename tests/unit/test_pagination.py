"""Page tokens: round trips, and every forged or edited token is INVALID_ARGUMENT naming
page_token."""

from __future__ import annotations

import base64
import secrets
import stat
from pathlib import Path

import pytest

from mesh import pagination
from mesh.errors import InvalidArgument
from mesh.pagination import decode_token, encode_token


def test_a_token_round_trips_for_its_own_list_only() -> None:
    token = encode_token("likes:u1", [42])
    assert decode_token(token, "likes:u1") == [42]
    assert decode_token("", "likes:u1") is None
    with pytest.raises(InvalidArgument):
        decode_token(token, "likes:u2")


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        base64.urlsafe_b64encode(b"[" * 300).decode(),  # deep nesting: RecursionError in json
        base64.urlsafe_b64encode(b'{"k": "likes:u1", "p": 5}').decode(),
        "x" * 10_000,
    ],
)
def test_forged_tokens_are_invalid_arguments(token: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        decode_token(token, "likes:u1")
    assert e.value.field == "page_token"


def test_an_edited_token_is_refused_before_its_contents_are_read() -> None:
    token = encode_token("likes:u1", [42])
    body, _, tag = token.partition(".")
    payload = base64.urlsafe_b64encode(b'{"k":"likes:u1","p":[999999999]}').rstrip(b"=")
    for edited in (f"{payload.decode()}.{tag}", body, f"{body}.", f"{body}.{tag[:-2]}"):
        with pytest.raises(InvalidArgument):
            decode_token(edited, "likes:u1")


def test_a_token_signed_with_another_key_is_refused() -> None:
    token = encode_token("likes:u1", [42])
    pagination.configure(b"another key, sixteen bytes or more")
    try:
        with pytest.raises(InvalidArgument):
            decode_token(token, "likes:u1")
        assert decode_token(encode_token("likes:u1", [7]), "likes:u1") == [7]
    finally:
        pagination.configure(secrets.token_bytes(32))


def test_the_key_file_is_made_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "page-token.key"
    first = pagination.load_key(path)
    assert len(first) == pagination.KEY_BYTES
    assert pagination.load_key(path) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["page-token.key"]  # no temp file left
