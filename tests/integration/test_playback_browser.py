"""A real browser plays what we serve: headless Chromium (Debian's, driven by Playwright) loads
the stack's test player, which plays a video's HLS ladder through hls.js and its original MP4
from the media edge; both advance, and a seek lands."""

from __future__ import annotations

import urllib.parse

from playwright.sync_api import Page

from stack.launcher import Stack
from tests.browser import NewPage
from tests.helpers import Http, sign_up
from tests.videos import portrait_clip, publish, ready


def _advances(page: Page, element: str, beyond: float) -> None:
    page.wait_for_function(
        f"document.getElementById('{element}').currentTime > {beyond}", timeout=30_000
    )


def test_chromium_plays_the_hls_ladder_and_the_original_and_seeks(
    edge: Http, stack: Stack, new_page: NewPage
) -> None:
    page = new_page()
    video = ready(edge, publish(edge, sign_up(edge), portrait_clip())["video_id"])
    query = urllib.parse.urlencode({"hls": video["hls_url"], "mp4": video["playback_url"]})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{stack.media_url}/player/?{query}")

    assert page.evaluate("Hls.isSupported()")  # Media Source Extensions, as on Android Chrome
    _advances(page, "hls", 1.0)
    _advances(page, "mp4", 1.0)
    levels = page.evaluate("window.playerEvents.find((e) => e.levels).levels")
    assert [(w, h) for w, h, _ in levels] == [(240, 426), (360, 640)]

    for element in ("hls", "mp4"):
        page.evaluate(f"document.getElementById('{element}').currentTime = 3.0")
        page.wait_for_function(
            f"(() => {{ const v = document.getElementById('{element}');"
            " return !v.seeking && v.currentTime >= 3.0; })()",
            timeout=30_000,
        )
        _advances(page, element, 3.2)  # and it plays on from there
    fatal = page.evaluate("window.playerEvents.filter((e) => e.fatal)")
    assert fatal == [] and errors == []
