"""The web page in a real browser: headless Chromium (the system package, driven by
Selenium) loads the page, submits a job with a tenant's key, and shows the plan, the
step progress and the image."""

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


def test_the_page_submits_a_job_and_shows_its_plan_progress_and_image(stack, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser = chromium()
    try:
        browser.get(stack.api.url + "/")
        assert "sdaas" in browser.title
        find = lambda i: browser.find_element(By.ID, i)  # noqa: E731
        find("key").send_keys(stack.keys["ann"])
        find("prompt").send_keys(PROMPT)
        find("style").clear()
        find("style").send_keys(stack.styles[0])
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
