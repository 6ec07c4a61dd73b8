"""The console in headless Chromium against the local cluster: each page renders and is
pictured, a Task's phase change shows without a reload, Approve and Reject are clicked through,
and the keyboard reaches everything (a skip link first, buttons by Tab)."""

from __future__ import annotations

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.browser import accessibility_violations, screenshot, wait_for
from tests.console.conftest import CADRE, Org, set_status

LIVE_TEXT = "return document.getElementById('live').innerText"


def _open(browser: webdriver.Chrome, org: Org, path: str, needle: str) -> None:
    browser.get(org.console.url.rstrip("/") + path)
    # The first answer may come before the watches have listed: live updates fill it in.
    wait_for(lambda: needle in browser.execute_script(LIVE_TEXT))


def test_every_page_renders_and_is_pictured(browser: webdriver.Chrome, org: Org) -> None:
    pages = {"organization": ("/", "Team platform"), "tasks": ("/tasks", "ship-it"),
             "waiting": ("/waiting", "pip install slugify-extra"),
             "agent": ("/agents/default/lead", "ship-it"), "spend": ("/spend", "By Team"),
             "task": ("/tasks/default/build", "Write slugify.")}  # fmt: skip
    for name, (path, needle) in pages.items():
        _open(browser, org, path, needle)
        assert browser.title.endswith("Cadre console")
        assert screenshot(browser, name).stat().st_size > 10_000
        problems = [(v["id"], v["help"], [n.get("target") for n in v["nodes"]][:3])
                    for v in accessibility_violations(browser)]  # fmt: skip
        assert not problems, (name, problems)
    # The organization page's Agents link to their pages.
    _open(browser, org, "/", "Team platform")
    browser.find_element(By.LINK_TEXT, "analyst").click()
    wait_for(lambda: browser.find_element(By.TAG_NAME, "h1").text == "Agent analyst")


def test_a_phase_change_shows_without_a_reload(browser: webdriver.Chrome, org: Org) -> None:
    _open(browser, org, "/tasks", "build")
    wait_for(lambda: browser.find_element(By.ID, "connection").text == "Live")
    browser.execute_script("window.notReloaded = true")
    set_status(org.http, "tasks", "build", {"phase": "Succeeded",
                                            "completionTime": "2026-12-06T10:05:00Z"})  # fmt: skip
    # Asked in one script: the row is replaced as updates arrive (a found element goes stale).
    phase = (
        "const row = document.getElementById('task-default-build'); return row && row.dataset.phase"
    )
    wait_for(lambda: browser.execute_script(phase) == "Succeeded")
    assert browser.execute_script("return window.notReloaded") is True


def test_approve_and_reject_are_clicked_through(browser: webdriver.Chrome, org: Org) -> None:
    _open(browser, org, "/waiting", "slugify is ready")
    reason = browser.find_element(By.ID, "why-default-build-toolu_01")
    reason.send_keys("No new packages")
    browser.find_element(By.ID, "reject-default-build-toolu_01").click()
    wait_for(lambda: "Rejected tool call toolu_01 of Task build." in browser.page_source)
    answers = org.http("GET", f"{CADRE}/tasks/build").json()["spec"]["toolApprovals"]
    assert answers["toolu_01"] == {"decision": "Rejected", "reason": "No new packages"}

    # Clicked by a script that finds it: the watch bringing the rejection redraws the list, and
    # an element found before that would be stale.
    click = "const b = document.getElementById(arguments[0]); if (b) b.click(); return !!b;"
    wait_for(lambda: browser.execute_script(click, "approve-default-ship-it"))
    wait_for(lambda: "Approved Task ship-it." in browser.page_source)
    assert org.http("GET", f"{CADRE}/tasks/ship-it").json()["spec"]["approval"] == {
        "decision": "Approved", "feedback": ""}  # fmt: skip
    # Both answered: once the watch brings the change, nothing waits.
    wait_for(lambda: "Nothing waits for a person." in browser.execute_script(LIVE_TEXT))


def test_the_keyboard_reaches_the_content_and_the_buttons(
    browser: webdriver.Chrome, org: Org
) -> None:
    _open(browser, org, "/waiting", "slugify is ready")
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    focused = browser.switch_to.active_element
    assert focused.text == "Skip to content"
    focused.send_keys(Keys.ENTER)
    seen = []
    for _ in range(30):
        browser.switch_to.active_element.send_keys(Keys.TAB)
        seen.append(browser.switch_to.active_element.get_attribute("id"))
    assert "approve-default-ship-it" in seen
    assert "reject-default-ship-it" in seen


def test_the_accessibility_check_does_find_problems(browser: webdriver.Chrome) -> None:
    """So that its silence on the console's pages means something."""
    browser.get("data:text/html,<html><body><img src='x.png'>"
                "<p style='color:%23ccc'>faint</p><button></button></body></html>")  # fmt: skip
    found = {v["id"] for v in accessibility_violations(browser)}
    assert {"image-alt", "color-contrast", "button-name", "html-has-lang"} <= found
