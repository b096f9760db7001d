"""The web chat as a person uses it, in headless Chromium: ask, watch the answer stream in, open a
citation, come back to a conversation, use the inbox, and find the admin page closed to non-admins.

Every wait is for something on the page (a selector, a state attribute), never for a duration.
`WEB_CHAT_SHOTS=folder` also saves what the tests see there: chat.png (the chat with its streamed,
cited answer, committed as docs/web-chat.png), phone.png, source.png and inbox.png.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest

from core.messaging import MessageItem, OutgoingMessage
from tests.browser.conftest import Site

# Without Playwright the fixtures skip each test with the reason; the import must not fail first.
expect = pytest.importorskip("playwright.async_api", reason="Playwright for Python is not installed").expect

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext, Page

DONE = ".turn .a[data-state=done]"


async def shot(page: Page, name: str) -> None:
    if folder := os.environ.get("WEB_CHAT_SHOTS"):
        await page.screenshot(path=os.path.join(folder, name))


async def ask(page: Page, question: str) -> None:
    await page.fill("#question", question)
    await page.click("#send")


async def open_chat(site: Site, browser: BrowserContext, *, width: int = 1280) -> Page:
    page = site.watch(await browser.new_page())
    await page.set_viewport_size({"width": width, "height": 900 if width > 500 else 844})
    await page.goto(site.url)
    await page.wait_for_selector("body[data-ready=true]")
    return page


async def test_a_question_gets_a_streamed_cited_answer_rendered_as_markdown(
    site: Site, browser: BrowserContext
) -> None:
    page = await open_chat(site, browser)
    await ask(page, "How do I install the VPN client?")
    answer = page.locator(DONE)
    await answer.wait_for()
    assert int(await answer.get_attribute("data-drafts") or 0) >= 1, "drafts were shown while it was written"
    await expect(answer.locator("strong")).to_have_text("HaldenConnect")
    await expect(answer.locator("table th").first).to_have_text("Platform")
    await expect(answer.locator("table td").nth(2)).to_have_text("macOS")
    cite = answer.locator("a.cite").first
    await expect(cite).to_have_text("[1]")
    assert (await cite.get_attribute("href") or "").startswith("/sources/")
    await expect(page.locator(".turn ol.sources a.source-link")).to_have_text("VPN")
    latency = await page.locator(".turn .latency").text_content() or ""
    assert "fake-llm" in latency and ("ms" in latency or " s" in latency) and "undefined" not in latency
    await expect(page.locator("#conversations a.conversation")).to_have_text(
        "How do I install the VPN client?"
    )
    await shot(page, "chat.png")


async def test_a_citation_opens_the_cited_section_of_the_source(site: Site, browser: BrowserContext) -> None:
    page = await open_chat(site, browser)
    await ask(page, "How do I install the VPN client?")
    await page.locator(DONE).wait_for()
    await page.locator(f"{DONE} a.cite").first.click()
    await page.wait_for_selector("body.source-page[data-ready=true]")
    assert page.url.endswith("#installing")
    section = page.locator("section#installing")
    await expect(section).to_have_class("src-section cited")
    await expect(section.locator("h2")).to_have_text("Installing")
    await expect(section.locator("table td").first).to_have_text("Windows")
    await shot(page, "source.png")
    assert await section.evaluate(
        "s => { const r = s.getBoundingClientRect(); return r.top >= 0 && r.top < innerHeight; }"
    )


async def test_the_conversation_comes_back_after_a_reload(site: Site, browser: BrowserContext) -> None:
    page = await open_chat(site, browser)
    await ask(page, "How do I install the VPN client?")
    await page.locator(DONE).wait_for()
    await ask(page, "And what if the VPN drops?")
    await expect(page.locator(DONE)).to_have_count(2)
    await page.reload()
    await page.wait_for_selector("body[data-ready=true]")
    await expect(page.locator(".turn .q")).to_have_text(
        ["How do I install the VPN client?", "And what if the VPN drops?"]
    )
    await expect(page.locator("#conversations li")).to_have_count(1)
    await page.click("#new-chat")
    await expect(page.locator(".turn")).to_have_count(0)
    await page.locator("#conversations a.conversation").click()
    await expect(page.locator(DONE)).to_have_count(2)


async def test_html_in_documents_questions_and_answers_stays_text(
    site: Site, browser: BrowserContext
) -> None:
    site.llm.enqueue(
        "To print, pick the Halden printer. <script>window.__xss = 'document'</script> "
        '<img src="x" onerror="window.__xss = \'image\'"> [1]'
    )
    page = await open_chat(site, browser)
    probe = (
        "<img src=x onerror=\"window.__xss='question'\"> How do I print? <script>window.__xss='q'</script>"
    )
    await ask(page, probe)
    await page.locator(DONE).wait_for()
    await expect(page.locator(".turn .q")).to_have_text(probe)
    assert await page.locator("#log img, #log script").count() == 0
    shown = await page.locator(".turn").text_content() or ""
    assert "<script>" in shown and "onerror=" in shown, "the markup is shown as text"
    hrefs = await page.evaluate(
        """() => [...KBMarkdown.render("[a](javascript:alert(1)) [b](data:text/html,x) [c](https://ok.example/)")
                    .querySelectorAll("a")].map(a => a.href)"""
    )
    assert hrefs == ["https://ok.example/"], "only http(s) and mailto links are made"
    doc = site.document_id("printing.md")
    await page.goto(site.at(f"/sources/{quote(doc, safe='')}#printing"))
    await page.wait_for_selector("body.source-page[data-ready=true]")
    text = await page.locator("section#printing").text_content() or ""
    assert '<img src="x" onerror=' in text and "<script>" in text
    assert await page.locator("main img, main script").count() == 0
    assert await page.evaluate("window.__xss") is None


async def test_the_chat_fits_a_phone_screen(site: Site, browser: BrowserContext) -> None:
    page = await open_chat(site, browser, width=390)
    assert not await page.locator("#sidebar").is_visible() or await page.locator("#sidebar").evaluate(
        "s => s.getBoundingClientRect().right <= 0"
    ), "the sidebar is a drawer on a phone"
    await ask(page, "How do I install the VPN client?")
    await page.locator(DONE).wait_for()
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways: {width} px wide"
    box = await page.locator("#send").bounding_box()
    assert box is not None and box["x"] + box["width"] <= 390
    await shot(page, "phone.png")
    await page.click("#menu")
    await expect(page.locator("#conversations a.conversation")).to_be_in_viewport()
    await shot(page, "phone-menu.png")


async def test_inbox_items_open_and_dismiss(site: Site, browser: BrowserContext) -> None:
    from bot.web.push_sender import WebInboxSender

    vpn, printing = site.document_id("vpn.md"), site.document_id("printing.md")
    await WebInboxSender(site.kb.store.engine).send(
        OutgoingMessage(
            platform="web",
            key="digest:web:1",
            user_id="web",
            kind="digest",
            title="Your knowledge digest: 2 documents",
            items=(
                MessageItem(vpn, "VPN", "docs/vpn.md", "updated"),
                MessageItem(printing, "Printer setup", "docs/printing.md", "new"),
            ),
            footer="Reply `digest off` to stop these.",
        )
    )
    page = await open_chat(site, browser)
    await expect(page.locator("#inbox-count")).to_have_text("1")
    await page.click("#inbox-toggle")
    items = page.locator(".inbox-item")
    await expect(items).to_have_count(2)
    await shot(page, "inbox.png")
    await items.filter(has_text="Printer setup").locator(".inbox-dismiss").click()
    await expect(items).to_have_count(1)
    await items.filter(has_text="VPN").locator(".inbox-open").click()
    await page.wait_for_selector("body.source-page[data-ready=true]")
    await expect(page.locator("h1")).to_have_text("VPN")
    page = await open_chat(site, browser)
    await page.click("#inbox-toggle")
    await expect(page.locator(".inbox-item")).to_have_count(1)
    await expect(page.locator("#inbox-count")).to_be_hidden()


async def test_the_admin_page_is_refused_to_a_non_admin(site: Site, browser: BrowserContext) -> None:
    page = site.watch(await browser.new_page())
    response = await page.goto(site.at("/admin"))
    assert response is not None and response.status == 403
    await expect(page.locator("p.error")).to_contain_text("admins only")
    chat = await open_chat(site, browser)
    await expect(chat.locator("#admin-link")).to_be_hidden()


async def test_a_restricted_source_is_refused(site: Site, browser: BrowserContext) -> None:
    page = site.watch(await browser.new_page())
    response = await page.goto(site.at(f"/sources/{quote(site.document_id('pay.md'), safe='')}"))
    assert response is not None and response.status == 403
    await expect(page.locator("p.error")).to_contain_text("may not read")
    assert "78,000" not in (await page.content())


@pytest.mark.parametrize("site", [{"bot_admins": ["web:web"]}], indirect=True)
async def test_an_admin_sees_status_sources_budget_and_the_slots(site: Site, browser: BrowserContext) -> None:
    chat = await open_chat(site, browser)
    await chat.click("#admin-link")
    await chat.wait_for_selector("body.admin-page[data-ready=true]")
    await expect(chat.locator("#status-list dd").first).to_have_text("3")
    await expect(chat.locator("#sources-table tbody td").nth(1)).to_have_text("3")
    await expect(chat.locator("#budget-summary")).to_contain_text("ε 0 of")
    # kb serve fills both slots: the registry's versions and the training runs, as tables.
    await expect(chat.locator("[data-slot=models] .slot-body th").first).to_have_text("version")
    await expect(chat.locator("[data-slot=training_runs] .slot-body th").first).to_have_text("run")
    await shot(chat, "admin.png")
