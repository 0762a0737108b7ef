"""The report in a real browser, as a user sees it: Debian's headless chromium through its chromedriver,
at 1280 px wide.

Checks what only a browser shows: no console errors, no horizontal overflow of the page (the grid
scrolls inside itself), what needs attention listed first, every case row present, the verdict filter,
a case's detail opening with its plotly chart, no number on the page with more than 4 significant
digits, and known failures folded out of "Needs attention" with each case one line of the grid.
Screenshots go to $VLM_PARITY_ARTIFACTS (a CI artifact folder) when set, else the test's tmp.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from harness.publish.report import publish
from tests.factories import synthetic_run, with_known

pytestmark = pytest.mark.browser

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
DECIMAL = re.compile(r"\d+\.\d+(?:e[+-]?\d+)?")


def long_numbers(text: str) -> list[str]:
    """Decimal numbers shown with more than 4 significant digits (counts and ids are integers, never flagged)."""
    return [n for n in DECIMAL.findall(text) if len(n.split("e")[0].replace(".", "").lstrip("0")) > 4]


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
                 "--window-size=1280,1000", f"--user-data-dir={tmp_path / 'profile'}"):
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
    shots = Path(os.environ.get("VLM_PARITY_ARTIFACTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(shots / "report-top.png"))

    # At 1280 px the page itself does not scroll sideways: the wide grid scrolls inside its own box.
    assert browser.execute_script("return document.documentElement.scrollWidth") <= 1280
    # What needs attention comes first, above the grid: every failing and erroring case, linked.
    listed = {a.get_attribute("data-case") for a in browser.find_elements(By.CSS_SELECTOR, "#attention-table a")}
    assert listed == {c.case_id for c in run.cases if c.verdict in ("fail", "error")}
    attention, grid = (browser.find_element(By.ID, i).location["y"] for i in ("attention", "cases"))
    assert attention < grid
    text = browser.find_element(By.TAG_NAME, "body").text
    assert not long_numbers(text), long_numbers(text)[:5]

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

    browser.execute_script("arguments[0].scrollIntoView()", visible[0])
    browser.save_screenshot(str(shots / "report-case.png"))
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []


def test_known_failures_fold_and_grid_rows_stay_one_line(browser, tmp_path: Path) -> None:
    """A run with known failures (one record on every passing case's `alone` cell): "Needs attention" lists
    only the failing and erroring groups, the record is one folded row, and each case is one line."""
    from selenium.webdriver.common.by import By

    run = synthetic_run(30)
    reason = "Engine bug: the cache drops images. Found by the alone variant on every case."
    with_known(run, [c.case_id for c in run.cases if c.verdict == "pass"], "alone", reason, "repro/cache.py")
    browser.get(publish(run, tmp_path / "report").html.as_uri())
    shots = Path(os.environ.get("VLM_PARITY_ARTIFACTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(shots / "report-known.png"))

    assert browser.execute_script("return document.documentElement.scrollWidth") <= 1280
    rows = browser.find_elements(By.CSS_SELECTOR, "#attention-table tbody > tr")
    assert [r.get_attribute("class") for r in rows] == ["att-error", "att-fail"]
    assert "cache drops images" not in browser.find_element(By.ID, "attention-table").get_attribute("textContent")
    known = browser.find_element(By.ID, "known")
    assert known.get_attribute("open") is None and known.is_displayed()
    assert not browser.find_element(By.ID, "known-table").is_displayed()
    assert "Known failures (26 cells in 1 record)" in known.text
    heights = [r.size["height"] for r in browser.find_elements(By.CSS_SELECTOR, "#cases tr.main")]
    assert len(heights) == 30 and max(heights) <= 60, max(heights)
