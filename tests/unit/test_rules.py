"""Account field limits (DESIGN.md) as pure functions."""

from __future__ import annotations

import pytest

from activity_svc import rules as activity_rules
from activity_svc.rules import check_display_name, check_handle, check_password
from mesh.errors import InvalidArgument
from mesh.validation import page_size, parse_uuid
from upload_svc import rules as upload_rules


@pytest.mark.parametrize("handle", ["abc", "a" * 30, "ana.b_9", "..."])
def test_valid_handles(handle: str) -> None:
    assert check_handle(handle) == handle


@pytest.mark.parametrize("handle", ["", "ab", "a" * 31, "Ana", "ana-b", "ana b", "anä", "ana\n"])
def test_invalid_handles_name_the_field(handle: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        check_handle(handle)
    assert e.value.field == "handle"


def test_password_limits_count_characters_not_bytes() -> None:
    assert check_password("ü" * 8)
    assert check_password("x" * 128)
    for bad in ("", "x" * 7, "x" * 129):
        with pytest.raises(InvalidArgument) as e:
            check_password(bad)
        assert e.value.field == "password"


def test_display_name_is_trimmed_and_defaults_to_handle() -> None:
    assert check_display_name("  Ana  ", "ana") == "Ana"
    assert check_display_name("   ", "ana") == "ana"
    assert check_display_name("Ana 🎬", "ana") == "Ana 🎬"
    # emoji sequences keep their joiners and tags (a family, the flag of Scotland)
    for emoji in (
        "\U0001f468\u200d\U0001f469\u200d\U0001f467",
        "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",
    ):
        assert check_display_name(f"Ana {emoji}", "ana") == f"Ana {emoji}"
    for bad in ("x" * 51, "a\x00b", "a\u202eb", "a\u200bb", "a\ufeffb", "a\nb"):
        with pytest.raises(InvalidArgument) as e:
            check_display_name(bad, "ana")
        assert e.value.field == "display_name"


def test_parse_uuid_names_the_field() -> None:
    assert str(parse_uuid("01a20fe4-20bf-7ab8-99c6-b74d095047be", "user_id")).startswith("01a2")
    for bad in ("", "nope", "01a20fe4"):
        with pytest.raises(InvalidArgument) as e:
            parse_uuid(bad, "user_id")
        assert e.value.message.startswith("user_id:")


def test_page_size_defaults_and_bounds() -> None:
    assert page_size(0) == 20
    assert page_size(100) == 100
    for bad in (-1, 101):
        with pytest.raises(InvalidArgument):
            page_size(bad)


@pytest.mark.parametrize("text", ["", "   ", "\n", "x" * 501, "a\x00b", "bell\x07"])
def test_bad_comments_are_rejected_naming_text(text: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        activity_rules.check_comment_text(text)
    assert e.value.field == "text"


@pytest.mark.parametrize("text", ["x", "é" * 500, "two\nlines\ttab", "🎉 nice"])
def test_good_comments_are_kept_as_written(text: str) -> None:
    assert activity_rules.check_comment_text(text) == text


@pytest.mark.parametrize("bidi", ["\u202a", "\u202e", "\u2066", "\u2069"])
def test_captions_and_comments_refuse_bidi_overrides(bidi: str) -> None:
    with pytest.raises(InvalidArgument, match="bidirectional"):
        upload_rules.check_caption(f"safe{bidi}txt.exe")
    with pytest.raises(InvalidArgument, match="bidirectional"):
        activity_rules.check_comment_text(f"look{bidi}here")


@pytest.mark.parametrize("control", ["\x00", "\x07", "\x1b", "\x7f", "\x85", "\x9b"])
def test_captions_and_comments_refuse_c0_and_c1_controls(control: str) -> None:
    with pytest.raises(InvalidArgument, match="control"):
        upload_rules.check_caption(f"a{control}b")
    with pytest.raises(InvalidArgument, match="control"):
        activity_rules.check_comment_text(f"a{control}b")
    assert activity_rules.check_comment_text("two\r\nlines\tand a tab") == "two\r\nlines\tand a tab"


def test_a_long_rejected_value_is_quoted_short() -> None:
    with pytest.raises(InvalidArgument) as e:
        upload_rules.check_content_type("x" * 100_000)
    assert len(e.value.message) < 200 and "100000 characters" in e.value.message
