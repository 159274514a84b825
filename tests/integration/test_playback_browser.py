"""A real browser plays what we serve: headless Chromium (Debian's, driven by Playwright) loads
the stack's test player, which plays a video's HLS ladder through hls.js and its original MP4
from the media edge; both advance, and a seek lands."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from stack.launcher import Stack
from tests.helpers import Http, sign_up
from tests.videos import portrait_clip, publish, ready

CHROMIUM = "/usr/bin/chromium"  # make test installs Debian's chromium when it is missing
# a closed network: nothing in the background may try to reach the outside
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    page = context.new_page()
    yield page
    context.close()


def _advances(page: Page, element: str, beyond: float) -> None:
    page.wait_for_function(
        f"document.getElementById('{element}').currentTime > {beyond}", timeout=30_000
    )


def test_chromium_plays_the_hls_ladder_and_the_original_and_seeks(
    edge: Http, stack: Stack, page: Page
) -> None:
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
