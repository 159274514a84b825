"""Sessions through the edge: refresh-token rotation, reuse detection, sign-out."""

from __future__ import annotations

import base64
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from stack.launcher import Stack
from tests.helpers import Http, Response, unique_handle


def _sign_up(edge: Http) -> dict:
    r = edge.post("/v1/users", {"handle": unique_handle("s"), "password": "correct horse"})
    assert r.status == 200, r.body
    return r.json()


def _refresh(edge: Http, refresh_token: str) -> Response:
    return edge.post("/v1/sessions:refresh", {"refresh_token": refresh_token})


def _owner_only(edge: Http, session: dict) -> int:
    """The status of a route only a signed-in owner may read, with the session's access token."""
    user_id = session["user"]["user_id"]
    return edge.get(f"/v1/users/{user_id}/favorites", token=session["access_token"]).status


def _claims(token: str) -> tuple[dict, dict]:
    header, payload, _ = token.split(".")
    decode = lambda part: json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))  # noqa: E731
    return decode(header), decode(payload)


def test_sign_up_starts_a_session_with_short_tokens_naming_it(edge: Http) -> None:
    session = _sign_up(edge)
    assert len(session["refresh_token"]) == 43
    header, claims = _claims(session["access_token"])
    assert header["kid"] and claims["sid"]
    assert claims["exp"] - claims["iat"] == 900  # JWT_TTL_SECONDS' default


def test_refresh_rotates_and_the_new_tokens_work(edge: Http) -> None:
    first = _sign_up(edge)
    r = _refresh(edge, first["refresh_token"])
    assert r.status == 200, r.body
    second = r.json()
    assert second["user"] == first["user"]
    assert second["refresh_token"] != first["refresh_token"]
    assert _claims(second["access_token"])[1]["sid"] == _claims(first["access_token"])[1]["sid"]
    assert _owner_only(edge, second) == 200
    third = _refresh(edge, second["refresh_token"])
    assert third.status == 200, third.body


def test_a_spent_refresh_token_presented_again_revokes_the_whole_session(edge: Http) -> None:
    first = _sign_up(edge)
    second = _refresh(edge, first["refresh_token"]).json()
    # a thief replays the first token: refused, and the legitimate latest token dies with it
    replay = _refresh(edge, first["refresh_token"])
    assert replay.status == 401
    assert replay.json()["code"] == 16 and "already used" in replay.json()["message"]
    assert _refresh(edge, second["refresh_token"]).status == 401


def test_two_refreshes_racing_with_one_token_do_not_both_win(stack: Stack) -> None:
    edge = Http(stack.topo.edge_port)
    session = _sign_up(edge)

    def refresh(_: int) -> Response:
        http = Http(stack.topo.edge_port)
        try:
            return _refresh(http, session["refresh_token"])
        finally:
            http.close()

    with ThreadPoolExecutor(2) as pool:
        replies = list(pool.map(refresh, range(2)))
    assert sorted(r.status for r in replies) == [200, 401]
    winner = next(r for r in replies if r.status == 200).json()
    assert _refresh(edge, winner["refresh_token"]).status == 401  # reuse revoked the session
    edge.close()


def test_sign_out_ends_only_that_session(edge: Http) -> None:
    signed_up = _sign_up(edge)
    handle = signed_up["user"]["handle"]
    other = edge.post("/v1/sessions", {"handle": handle, "password": "correct horse"}).json()
    r = edge.request("DELETE", "/v1/sessions/current", token=signed_up["access_token"])
    assert (r.status, r.json()) == (200, {})
    refused = _refresh(edge, signed_up["refresh_token"])
    assert refused.status == 401 and "ended" in refused.json()["message"]
    # idempotent; the access token itself lives until it expires
    r = edge.request("DELETE", "/v1/sessions/current", token=signed_up["access_token"])
    assert r.status == 200
    assert _refresh(edge, other["refresh_token"]).status == 200  # the other sign-in is untouched


def test_sign_out_needs_a_token_and_a_forged_session_header_is_ignored(edge: Http) -> None:
    assert edge.request("DELETE", "/v1/sessions/current").status == 401
    victim, attacker = _sign_up(edge), _sign_up(edge)
    victim_sid = _claims(victim["access_token"])[1]["sid"]
    r = edge.request(
        "DELETE",
        "/v1/sessions/current",
        token=attacker["access_token"],
        headers={"x-session-id": victim_sid},
    )
    assert r.status == 200
    assert _refresh(edge, victim["refresh_token"]).status == 200
    assert _refresh(edge, attacker["refresh_token"]).status == 401


def test_bad_refresh_tokens(edge: Http) -> None:
    for body, status in [
        ({}, 400),
        ({"refresh_token": "x" * 10_000}, 400),
        ({"refresh_token": "not a token"}, 400),
        ({"refresh_token": "A" * 43}, 401),  # well-formed, never issued
    ]:
        r = edge.post("/v1/sessions:refresh", body)
        assert r.status == status, (body, r.body)
        assert len(r.json()["message"]) < 200


def test_tokens_never_reach_the_logs(edge: Http, stack: Stack) -> None:
    session = _sign_up(edge)
    refreshed = _refresh(edge, session["refresh_token"]).json()
    _refresh(edge, session["refresh_token"])  # a reuse, which is logged
    secrets = [
        session["refresh_token"],
        refreshed["refresh_token"],
        session["access_token"].rsplit(".", 1)[1],
        refreshed["access_token"].rsplit(".", 1)[1],
    ]
    logs: list[Path] = sorted((stack.topo.data_dir / "logs").glob("*.log"))
    assert logs
    for path in logs:
        text = path.read_text(errors="replace")
        assert not [s for s in secrets if s in text], path.name


def test_refresh_works_with_an_expired_or_bad_access_token_sent_along(edge: Http) -> None:
    session = _sign_up(edge)
    for stale in ("not.a.jwt", session["access_token"] + "x"):
        r = edge.post(
            "/v1/sessions:refresh", {"refresh_token": session["refresh_token"]}, token=stale
        )
        assert r.status == 200, r.body
        session = r.json()
