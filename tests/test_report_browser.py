"""The report in a real browser: Debian's headless chromium driven through Debian's chromedriver.

Checks what only a browser shows: no console errors, every case row present,
the verdict filter hiding rows, a case's detail opening with its plotly chart.
Saves a screenshot to reports/browser-test.png (a CI artifact).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from harness.report import publish
from tests.factories import synthetic_run

pytestmark = pytest.mark.browser

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SCREENSHOT = Path(__file__).resolve().parents[1] / "reports" / "browser-test.png"


@pytest.fixture
def browser(tmp_path: Path):
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        if os.environ.get("CI"):
            pytest.fail("chromium/chromedriver missing: bootstrap.py installs them (apt-get install chromium "
                        "chromium-driver)")
        pytest.skip("Debian chromium and chromedriver not installed (bootstrap.py test installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # No network here: without these chromium keeps trying to reach Google's hosts.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_report_in_browser(browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    run = synthetic_run(40)
    counts = run.counts()
    html = publish(run, tmp_path / "report").html
    browser.get(html.as_uri())

    rows = browser.find_elements(By.CSS_SELECTOR, "tbody.case")
    assert len(rows) == 40

    Select(browser.find_element(By.ID, "filter-verdict")).select_by_value("fail")
    visible = [r for r in rows if r.is_displayed()]
    assert len(visible) == counts["fail"] > 0
    assert {r.get_attribute("data-verdict") for r in visible} == {"fail"}
    assert browser.find_element(By.ID, "shown-count").text == str(counts["fail"])

    visible[0].find_element(By.CSS_SELECTOR, "tr.main").click()
    detail = visible[0].find_element(By.CSS_SELECTOR, "tr.detail")
    assert detail.is_displayed()
    WebDriverWait(browser, 10).until(lambda _: detail.find_elements(By.CSS_SELECTOR, ".chart .main-svg"))
    assert detail.find_elements(By.CSS_SELECTOR, ".tok.first-div")

    # A grid cell opens the case and scrolls to that variant's section.
    closed = [r for r in rows if r.get_attribute("data-verdict") == "pass"][0]
    Select(browser.find_element(By.ID, "filter-verdict")).select_by_value("")
    assert sum(r.is_displayed() for r in rows) == 40
    closed.find_element(By.CSS_SELECTOR, 'td.cell[data-variant="alone"]').click()
    section = closed.find_element(By.CSS_SELECTOR, f'#detail-{closed.get_attribute("data-case")}--alone')
    assert section.is_displayed() and "variant alone" in section.text

    SCREENSHOT.parent.mkdir(exist_ok=True)
    browser.execute_script("arguments[0].scrollIntoView()", visible[0])
    browser.save_screenshot(str(SCREENSHOT))
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
