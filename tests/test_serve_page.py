"""The page at `/` in a real headless Chromium (Debian's chromium and chromium-driver, driven by
Selenium; .ci/run installs them): three clicks build a session, and the list of next items and the
bars of each click's weight follow. Skipped, saying why, only where the browser is not installed and
this is no CI run. NEXTCLICK_PAGE_SCREENSHOT names where the screenshot goes besides the test's folder."""

from __future__ import annotations

import os
import shutil

import pytest

pytest.importorskip("fastapi")
webdriver = pytest.importorskip("selenium.webdriver")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from nextclick.serve.app import ServeConfig, create_app  # noqa: E402
from test_serve import live_server, save_run  # noqa: E402


@pytest.fixture(scope="module")
def browser():
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if binary is None or driver is None:
        if os.environ.get("CI"):
            pytest.fail("chromium or chromedriver missing on CI: .ci/run must install chromium and chromium-driver")
        pytest.skip("Debian's chromium and chromium-driver are not installed here (.ci/run installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1100,800"):
        options.add_argument(flag)  # no sandbox: CI runs as root, which Chromium's sandbox refuses
    browser = webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver), options=options)
    yield browser
    browser.quit()


def test_three_clicks_on_the_page_update_the_session_the_next_items_and_the_weight_bars(browser, tmp_path):
    run = save_run(tmp_path / "dsan", "dsan")
    catalogue = tmp_path / "items.csv"
    catalogue.write_text("id,name\n" + "".join(f"{1000 + i},item number {i}\n" for i in range(1, 51)))
    wait = WebDriverWait(browser, 20)
    with live_server(create_app(ServeConfig(run=str(run), catalogue=str(catalogue)))) as url:
        browser.get(url + "/")
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#catalogue button")) >= 3)
        assert "item number 1 (1001)" in browser.find_element(By.ID, "catalogue").text  # names from the catalogue
        lists = []
        for clicks in (1, 2, 3):
            browser.find_elements(By.CSS_SELECTOR, "#catalogue button")[clicks].click()
            wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#session li")) == clicks
                       and len(b.find_elements(By.CSS_SELECTOR, ".weight .bar")) == clicks)
            items = [li.get_attribute("data-item") for li in browser.find_elements(By.CSS_SELECTOR, "#recommendations li")]
            assert len(items) == 10
            lists.append(items)
            weights = [float(b.get_attribute("data-weight")) for b in browser.find_elements(By.CSS_SELECTOR, ".weight .bar")]
            assert abs(sum(weights) - 1.0) < 1e-3  # DSAN's target attention over the clicks sums to one
        assert lists[0] != lists[2]
        assert browser.find_element(By.ID, "error").text == ""
        shot = tmp_path / "page.png"
        assert browser.save_screenshot(str(shot)) and shot.read_bytes().startswith(b"\x89PNG")
        if os.environ.get("NEXTCLICK_PAGE_SCREENSHOT"):
            shutil.copyfile(shot, os.environ["NEXTCLICK_PAGE_SCREENSHOT"])
