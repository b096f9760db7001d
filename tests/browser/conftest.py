"""The web chat in a real headless Chromium (Debian's `chromium`), driven by Playwright for Python.

`make test` installs Chromium first (`make chromium`, from Debian's packages when it is missing);
Playwright's own browser download is never used: it drives /usr/bin/chromium through
`executable_path`, with a fresh profile per test and the flags that keep it off the network.
Without Chromium or Playwright the tests are skipped with the reason; with them, they run.

`kb serve`'s application runs in the test's own event loop (aiohttp's TestServer on 127.0.0.1),
with a small knowledge base, a FakeLLM that writes its answer slowly enough to be streamed, the
push inbox, and the page's content security policy (`script-src 'self'; style-src 'self'`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from app.server.assembly import create_app
from app.server.push import mount_push
from core import db
from core.settings import Settings
from knowledge.embeddings import Embedder
from knowledge.service import KnowledgeBase
from tests.fakes import FakeLLM

CHROMIUM = Path(os.environ.get("KB_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
TIMEOUT_MS = 60_000  # generous: the machine may be busy; every wait is for an event, not a duration
CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'"

try:
    from playwright.async_api import BrowserContext, Page, async_playwright
except ImportError:  # pragma: no cover - the reason is reported by the skip below
    async_playwright = None  # type: ignore[assignment]

if async_playwright is None:
    pytestmark_reason = "Playwright for Python is not installed (pip install -e '.[dev]')"
elif not CHROMIUM.exists():
    pytestmark_reason = (
        f"{CHROMIUM} is missing and could not be installed (make chromium: apt-get install chromium)"
    )
else:
    pytestmark_reason = ""

ANSWER = (
    "Install **HaldenConnect** from the Software Center [1].\n\n"
    "| Platform | Client |\n| --- | --- |\n| Windows | HaldenConnect 5 |\n| macOS | HaldenConnect 5 |\n\n"
    "Then sign in with your company account [1]."
)

VPN = """# VPN

Everything about the company VPN.

## Installing

Install HaldenConnect from the Software Center, then sign in with your company account.

| Platform | Client |
| --- | --- |
| Windows | HaldenConnect 5 |
| macOS | HaldenConnect 5 |

## Troubleshooting

If the VPN drops, restart HaldenConnect. Call the service desk on 4000 if it keeps dropping.
"""

PROBE = """# Printer setup

## Printing

To print, pick the Halden printer. <script>window.__xss = 'document'</script>
<img src="x" onerror="window.__xss = 'image'"> Printing works from every floor.
"""

PAY = "---\nacl_groups: [hr]\n---\n# Pay bands\n\nBand H5 pays up to 78,000 EUR.\n"


@dataclass
class Site:
    """The running chat: its address, the knowledge base behind it, and the console's complaints."""

    url: str
    kb: KnowledgeBase
    settings: Settings
    llm: FakeLLM
    problems: list[str] = field(default_factory=list)

    def at(self, path: str) -> str:
        return self.url.rstrip("/") + path

    def document_id(self, name: str) -> str:
        from sqlmodel import Session, select

        from core.models import DocumentRow

        with Session(self.kb.store.engine) as session:
            ids = session.exec(select(DocumentRow.id)).all()
        return next(i for i in ids if i.endswith(name))

    def watch(self, page: Page) -> Page:
        """Record page errors and CSP violations: any of them fails the test at teardown."""
        page.set_default_timeout(TIMEOUT_MS)
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))

        def console(message: Any) -> None:
            if message.type == "error" and "Failed to load resource" not in message.text:
                self.problems.append(f"console: {message.text}")

        page.on("console", console)
        return page


def _skip_without_browser() -> None:
    if pytestmark_reason:
        pytest.skip(pytestmark_reason)


async def _csp(_request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("Content-Security-Policy", CSP)


@pytest.fixture
async def site(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings], tmp_path: Path, embedder: Embedder
) -> AsyncIterator[Site]:
    """Settings may be changed per test: `@pytest.mark.parametrize("site", [{...}], indirect=True)`."""
    _skip_without_browser()
    settings: Settings = make_settings(**getattr(request, "param", {}))
    engine = db.make_engine(settings)
    db.upgrade(engine)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "vpn.md").write_text(VPN)
    (docs / "printing.md").write_text(PROBE)
    (docs / "pay.md").write_text(PAY)
    kb = KnowledgeBase(settings, engine, embedder=embedder)
    kb.ingest([docs])
    llm = FakeLLM(piece_chars=6, delay_s=0.04, default=ANSWER)
    kb.llm = llm
    app = create_app(settings, kb)
    mount_push(app, settings, engine)
    app.on_response_prepare.append(_csp)
    async with TestServer(app, host="127.0.0.1") as server:
        yield Site(str(server.make_url("/")), kb, settings, llm)
    engine.dispose()


@pytest.fixture
async def browser(tmp_path: Path, site: Site) -> AsyncIterator[BrowserContext]:
    """A fresh Chromium profile with a phone-sized and a desktop-sized page available."""
    assert async_playwright is not None
    profile = tmp_path / "chromium-profile"
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context
        finally:
            await context.close()
            shutil.rmtree(profile, ignore_errors=True)
    assert not site.problems, site.problems
