"""Page tokens: round trips, and every forged token is INVALID_ARGUMENT naming page_token."""

from __future__ import annotations

import base64

import pytest

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
