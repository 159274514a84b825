"""Headless Chromium for the browser tests: Debian's package (``make test`` installs it when
missing), driven by Playwright with ``executable_path``; Playwright never downloads a browser.

Each page gets its own browser context (cookies, storage) and its own client address on its
API calls (X-Forwarded-For, which the test stack's edge believes from loopback), so per-address
limits see separate people. A failing test leaves a screenshot of each of its pages in
``tests/artifacts/`` (git-ignored), with what its console said."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.helpers import random_address

CHROMIUM = "/usr/bin/chromium"
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
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}

NewPage = Callable[..., Page]


# Per module, not per session: Playwright's sync API keeps an event loop running in this thread
# while it is open, and tests elsewhere that call asyncio.run() would fail beside it.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def new_page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[NewPage]:
    """``new_page(viewport=PHONE)``: a page in a fresh context, as a new person on a new device.
    Page scripts run despite the web client's CSP (Playwright evaluates with eval)."""
    pages: list[tuple[Page, list[str]]] = []

    def make(viewport: dict[str, int] = PHONE) -> Page:
        context = browser.new_context(viewport=viewport, bypass_csp=True)
        address = random_address()
        # added below the page (as a proxy would), on API calls only: a header the page itself
        # sent would make every cross-origin request a CORS preflight no real browser sends.
        # (The handler runs in this process: an API call waits while the test is not inside a
        # Playwright call, so wait in the browser, e.g. expect_response, not with sleep loops.)
        context.route(
            "**/v1/**",
            lambda route: route.continue_(
                headers={**route.request.headers, "x-forwarded-for": address}
            ),
        )
        page = context.new_page()
        page.set_default_timeout(30_000)
        lines: list[str] = []
        page.on("console", lambda m: lines.append(f"console.{m.type}: {m.text}"))
        page.on("pageerror", lambda e: lines.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: lines.append(f"request failed: {r.url} {r.failure}"))
        pages.append((page, lines))
        return page

    yield make
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        name = re.sub(r"[^\w.-]", "_", request.node.name)
        for i, (page, lines) in enumerate(pages):
            page.screenshot(path=str(ARTIFACTS / f"{name}-{i}.png"))
            (ARTIFACTS / f"{name}-{i}.log").write_text("".join(f"{line}\n" for line in lines))
    for page, _ in pages:
        page.context.close()
