"""The web page in a real browser: headless Chromium (the system package, driven by
Selenium) loads the page, offers the served styles, submits a job with a tenant's key,
and shows the plan, the step progress and the image."""

from __future__ import annotations

import shutil

import pytest

from tests.api.conftest import PROMPT

pytestmark = pytest.mark.slow


def chromium():
    """The system Chromium and its driver (`make test` installs them when missing)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.fail("no system Chromium/chromedriver: `make test` installs them "
                    "(apt-get install chromium chromium-driver)")  # fmt: skip
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1200,1400"):  # fmt: skip
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=opts)


def listed_styles(browser):
    """The Style list's (value, text) pairs, read in one script: the page replaces the
    options when the styles load, so options found first and read one by one can be gone
    (Selenium's stale element) by the time each is read."""
    script = "return [...document.getElementById('style').options].map(o => [o.value, o.text])"
    return [tuple(o) for o in browser.execute_script(script)]


def table_cells(browser, table_id):
    """A table's body cells row by row, read in one script (the page redraws its tables)."""
    return browser.execute_script(
        "return [...document.querySelectorAll('#' + arguments[0] + ' tbody tr')]"
        ".map(tr => [...tr.cells].map(td => td.innerText))", table_id)  # fmt: skip


def test_the_page_submits_a_job_and_shows_its_plan_progress_and_image(stack, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser = chromium()
    try:
        browser.get(stack.api.url + "/")
        assert "sdaas" in browser.title
        find = lambda i: browser.find_element(By.ID, i)  # noqa: E731
        find("key").send_keys(stack.keys["ann"])
        find("prompt").send_keys(PROMPT)  # the key field left: its styles are listed
        # the served styles to pick from, the first chosen; the style is left as it is
        options = lambda: [v for v, _ in listed_styles(browser)]  # noqa: E731
        WebDriverWait(browser, 30, poll_frequency=0.1).until(lambda b: options() == stack.styles)
        assert find("style").get_attribute("value") == stack.styles[0]
        find("slo").clear()
        find("slo").send_keys("300")
        find("go").click()
        wait = WebDriverWait(browser, 120, poll_frequency=0.1)
        # the plan, then live progress, then the image
        wait.until(lambda b: find("plan").text.startswith("plan: "))
        wait.until(lambda b: find("status").text == "done")
        shown = (
            "const i = document.getElementById('image'); return i.complete && i.naturalWidth > 0"
        )
        wait.until(lambda b: b.execute_script(shown))
        steps = int(find("progress").get_attribute("max"))
        assert find("progress").get_attribute("value") == str(steps)
        assert find("steps").text == f"step {steps} of {steps}"
        log = find("log").get_attribute("textContent").split("\n")
        assert [line for line in log if line.startswith("step")] == [
            f"step {i}/{steps}" for i in range(1, steps + 1)]  # fmt: skip
        assert "done in" in find("outcome").text and not find("error").text
        # the operator view: the job is among the recent ones
        wait.until(lambda b: find("job").text in find("recent").text)
        browser.save_screenshot(str(tmp_path / "page.png"))
        # a bad key is told, not crashed on
        find("key").clear()
        find("key").send_keys("sdaas_0.wrong")
        find("go").click()
        wait.until(lambda b: "401" in find("error").text)
    finally:
        browser.quit()


def test_the_style_list_is_the_served_styles_and_the_first_generate_sends_the_first(
    tmp_path, monkeypatch
):
    """The API alone (its Kafka side not started): a key remembered from an earlier visit
    lists the styles as the page loads, a key typed in does when the field is left, and
    Generate right after typing a key sends a served style (once, a blank one answered
    422 "style '': unknown")."""
    import json

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from api.front import ApiConfig, Front
    from api.server import ApiServer

    monkeypatch.setattr(Front, "start", lambda self, loop: setattr(self, "_loop", loop))
    monkeypatch.setattr(Front, "stop", lambda self: (self.watch.stop(), self.book.close()))
    sent = []

    async def send_job(self, tenant, job_id):  # what reached "Kafka"
        sent.append(self.book.request_of(tenant, job_id))
        self.book.sent(tenant, job_id, "t")

    monkeypatch.setattr(Front, "send_job", send_job)
    styles = ("outline", "flat", "pixel <b>art</b>")
    cfg = ApiConfig(bootstrap="unused:1", data_dir=tmp_path, results_dir=tmp_path,
                    styles=styles)  # fmt: skip
    with ApiServer(cfg) as api:
        key = api.front.keys.create("ann")
        browser = chromium()
        try:
            browser.get(api.url + "/")
            find = lambda i: browser.find_element(By.ID, i)  # noqa: E731
            wait = WebDriverWait(browser, 30, poll_frequency=0.1)
            options = lambda: listed_styles(browser)  # noqa: E731
            assert [v for v, _ in options()] == [""]  # no key yet: nothing listed
            find("key").send_keys(key)
            find("prompt").send_keys("a red circle")
            find("go").click()  # at once: the styles are fetched before the job is sent
            wait.until(lambda b: find("job").text not in ("", "-") or find("error").text)
            assert not find("error").text
            assert options() == [(s, s) for s in styles]  # as text: no markup from a name
            assert json.loads(sent[0])["style"] == "outline"
            browser.refresh()  # the key is remembered: the list is there without typing
            wait.until(lambda b: [v for v, _ in options()] == list(styles))
            assert find("style").get_attribute("value") == "outline"
        finally:
            browser.quit()


def test_an_operator_key_shows_the_engines_node_by_node_and_a_tenant_key_does_not(
    tmp_path, monkeypatch
):
    """The API alone (its Kafka side not started), fed a heartbeat by hand: an operator's
    page lists the engines with their states, a hostile engine id as text."""
    import asyncio
    import time

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from api.front import ApiConfig, Front
    from api.server import ApiServer

    monkeypatch.setattr(Front, "start", lambda self, loop: setattr(self, "_loop", loop))
    monkeypatch.setattr(Front, "stop", lambda self: (self.watch.stop(), self.book.close()))
    hostile = '<img src=x onerror="window.pwned=1">'
    engines = [
        {"engine": "cpu-x@10.0.0.2/ab#0", "kind": "cpu-x", "node": "10.0.0.2",
         "state": "serving", "in_service": True, "resident": ["toy@1", "toy@2"], "running": 3,
         "queued": 1, "dispatch_p99_ms": 1.5},
        {"engine": "cpu-x@10.0.0.1/cd#1", "kind": "cpu-x", "node": "10.0.0.1", "state": "left",
         "in_service": False, "resident": [], "running": 0, "queued": None,
         "dispatch_p99_ms": None},
        {"engine": hostile, "kind": "cpu-x", "node": "10.0.0.1", "state": "starting",
         "in_service": False, "resident": [], "running": 0, "queued": 0,
         "dispatch_p99_ms": None},
    ]  # fmt: skip
    cfg = ApiConfig(bootstrap="unused:1", data_dir=tmp_path, results_dir=tmp_path)
    with ApiServer(cfg) as api:
        front = api.front
        keys = {"ann": front.keys.create("ann"), "ops": front.keys.create("ops", operator=True)}
        beat = {"tenant": "", "job_id": "", "event": "ready", "ts": time.time(),
                "server": "s1", "every_s": 60.0, "engines": engines}  # fmt: skip
        asyncio.run_coroutine_threadsafe(front._apply([beat]), front._loop).result(10)
        browser = chromium()
        try:
            browser.get(api.url + "/")
            find = lambda i: browser.find_element(By.ID, i)  # noqa: E731
            wait = WebDriverWait(browser, 30, poll_frequency=0.1)
            assert not find("engines-card").is_displayed()  # no key yet
            find("key").send_keys(keys["ops"])
            browser.execute_script("refreshOps()")
            wait.until(lambda b: find("engines-card").is_displayed())
            wait.until(lambda b: len(table_cells(b, "engines")) == 3)
            cells = table_cells(browser, "engines")
            assert cells == [  # node by node; the node named once
                ["10.0.0.1", hostile, "cpu-x", "starting (out of service)", "-", "0", "0", "-"],
                ["", "cpu-x@10.0.0.1/cd#1", "cpu-x", "left (out of service)", "-", "0", "-",
                 "-"],
                ["10.0.0.2", "cpu-x@10.0.0.2/ab#0", "cpu-x", "serving", "toy@1, toy@2", "3", "1",
                 "1.5"],
            ]  # fmt: skip
            assert "10.0.0.1: 0 of 2 in service, 0 running" in find("nodes").text
            assert browser.execute_script("return window.pwned") is None
            browser.save_screenshot(str(tmp_path / "engines.png"))
            find("key").clear()
            find("key").send_keys(keys["ann"])
            browser.execute_script("refreshOps()")
            wait.until(lambda b: not find("engines-card").is_displayed())
        finally:
            browser.quit()
