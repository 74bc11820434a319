"""The web pages in a real headless Chromium (Debian's chromium and
chromium-driver, driven by Selenium) against the real stack: sign in, create
a token, push with it through git-lfs, see the usage change, lock with git-lfs
and unlock on the page, sign out. Screenshots of every step are kept in the
test's temp dir (`screenshots/`)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.gitclient import GitUser
from tests.prerequisites import skip_or_fail
from tests.stack import Stack
from tests.waiting import wait_until

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PASSWORD = "correct horse battery"
REPO = "team/game"
# No first-run UI, no background traffic (updates, sync, QUIC probes): the
# browser talks only to the server under test.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--window-size=1280,900",
]
PHONE = (390, 844)
ZOOMED = (640, 900)  # a 1280-pixel-wide screen at 200 % zoom


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        skip_or_fail("chromium and chromedriver (Debian: chromium chromium-driver)")
    if importlib.util.find_spec("selenium") is None:
        skip_or_fail("selenium (pip install -e '.[test]')")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    # Selenium Manager must never fetch a browser or a driver: both are given.
    monkeypatch.setenv("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("web-stack"), LFS_ANONYMOUS="none").start()
    try:
        stack.add_user("ada", PASSWORD, (REPO, "write"))
        yield stack
    finally:
        stack.stop()


class Pages:
    """The browser on the web pages, with a screenshot of each step."""

    def __init__(self, driver: Any, stack: Stack, shots: Path) -> None:
        self.driver = driver
        self.url = f"{stack.url}/.lfs/ui"
        self.shots = shots
        shots.mkdir()

    def open(self, page: str) -> None:
        self.driver.get(f"{self.url}{page}")

    def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def text(self) -> str:
        """The page's text; "" while a new page replaces the old one (waits ask again)."""
        from selenium.common.exceptions import StaleElementReferenceException

        try:
            return self.find("body").text
        except StaleElementReferenceException:
            return ""

    def shot(self, name: str) -> None:
        self.driver.save_screenshot(str(self.shots / f"{name}.png"))

    def fits(self, size: tuple[int, int], name: str) -> None:
        """Readable at this window size: nothing wider than the window."""
        before = self.driver.get_window_size()
        self.driver.set_window_size(*size)
        width = self.driver.execute_script(
            "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        self.shot(name)
        self.driver.set_window_size(before["width"], before["height"])
        assert width[0] <= width[1], (name, width)


def test_sign_in_token_push_usage_lock_unlock_sign_out(
    browser: Any, server: Stack, tmp_path: Path
) -> None:
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    pages = Pages(browser, server, tmp_path / "screenshots")

    # A stranger lands on the sign-in page; sign in with the keyboard alone.
    pages.open("/tokens")
    assert browser.current_url == f"{pages.url}/signin"
    pages.shot("signin")
    pages.fits(PHONE, "signin-phone")
    focused = browser.switch_to.active_element
    assert focused.get_attribute("id") == "name"  # autofocus on the first field
    focused.send_keys("ada", Keys.TAB)
    browser.switch_to.active_element.send_keys(PASSWORD, Keys.ENTER)
    assert wait_until(lambda: browser.current_url == f"{pages.url}/repos", 10)
    assert "Signed in as ada" in pages.text()
    assert f"{REPO}" in pages.text()
    # The page's own stylesheet applied (the CSP lets it in), and nothing was refused.
    assert pages.find(".skip").value_of_css_property("position") == "absolute"
    assert [
        e for e in browser.get_log("browser") if "Content Security Policy" in e["message"]
    ] == []

    # Create a token: shown once.
    pages.open("/tokens")
    pages.find("#note").send_keys("laptop")
    Select(pages.find("#expires")).select_by_value("30d")
    pages.find("#note").submit()
    assert wait_until(lambda: "Your new token" in pages.text(), 10)
    token = pages.find("#new-token").text.strip()
    assert token.startswith("lfs_")
    assert f"password={token}" in pages.find("#approve-snippet").text
    pages.shot("token-created")
    pages.fits(ZOOMED, "token-created-zoomed")

    # git-lfs pushes with that token.
    ada = GitUser(tmp_path / "home-ada", "ada", token, server.url)
    remote = tmp_path / "remote.git"
    work = ada.new_repo(tmp_path / "work", server.lfs_base(REPO), remote)
    ada.git("config", "lfs.locksverify", "true", cwd=work)
    ada.commit_files(work, {"hero.bin": b"h" * 5000, "level.bin": b"l" * 3000})
    ada.git("push", "-q", "origin", "main", cwd=work)

    # The repository's usage shows the push.
    pages.open("/repos")
    assert "laptop" not in pages.text()
    row = pages.find("tbody tr").text
    assert row.startswith(REPO) and "write" in row and " 2 " in f" {row} " and "7.8 KiB" in row
    pages.shot("repos")
    pages.fits(PHONE, "repos-phone")
    pages.open(f"/repos/{REPO}")
    assert pages.find("#objects").text == "2"
    assert f"git config lfs.url {server.lfs_base(REPO)}" in pages.text()
    assert pages.find("svg polyline").get_attribute("points")
    pages.shot("repo")
    pages.fits(ZOOMED, "repo-zoomed")

    # Lock with git-lfs, unlock on the page.
    assert "Locked hero.bin" in ada.git("lfs", "lock", "hero.bin", cwd=work)
    pages.open(f"/locks/{REPO}")
    assert "hero.bin" in pages.text() and "ada (you)" in pages.text()
    pages.shot("locks")
    pages.find("button[aria-label='Unlock hero.bin']").click()
    assert wait_until(lambda: "hero.bin is unlocked." in pages.text(), 10)
    assert ada.git("lfs", "locks", cwd=work) == ""
    pages.shot("unlocked")

    # Sign out: the pages are closed again.
    pages.find(".signout button").click()
    assert wait_until(lambda: browser.current_url == f"{pages.url}/signin", 10)
    pages.open("/tokens")
    assert browser.current_url == f"{pages.url}/signin"
    pages.shot("signed-out")
    assert {p.name for p in pages.shots.iterdir()} >= {"signin.png", "repos.png", "locks.png"}
