"""The control panel in a real browser (the system's headless Chromium, driven by selenium): a click, the intensity
slider and the page's keyboard shortcuts change the real `ControlState`, a hotkey's change shows on the page, and the
preview shows the published frames.

With LIVEMOOD_SCREENSHOT=1 it also saves docs/control_panel.png (for the README), the preview showing a real face.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from livemood.config import Controls
from livemood.controls import ControlState
from livemood.live.control import ControlServer
from livemood.live.control_preview import PREVIEW_MAX_WIDTH
from livemood.live.keys import EMOTION_BY_KEY, apply_key

pytest.importorskip("selenium", reason="selenium is in the dev extra: pip install -e '.[dev]'")

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Headless Chromium in a container: no sandbox or GPU, and nothing that phones home or updates itself.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars")
WINDOW = (1280, 880)  # pixels, the browser window; headless Chromium shows a ~1280x740 page in it
WAIT_S = 15.0  # a guard against hanging if the page is broken, never a timing check
FPS = 30.0  # the test's stand-in for the pipeline publishes at this rate
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "control_panel.png"

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()),
    reason=f"needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver; CI installs them)",
)


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never download a browser or driver
    with tempfile.TemporaryDirectory(prefix="livemood-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def webcam_frame() -> np.ndarray:
    """A 1280x720 BGR frame with a real face: the top 16:9 of scikit-image's astronaut, framed like a webcam's."""
    from skimage import data

    portrait = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)  # (512, 512, 3)
    return cv2.resize(portrait[:288], (1280, 720), interpolation=cv2.INTER_CUBIC)


class Publisher(threading.Thread):
    """Publishes the frame at FPS, a new array object each time (a view), like the pipeline's output."""

    def __init__(self, server: ControlServer, frame: np.ndarray) -> None:
        super().__init__(daemon=True)
        self.server, self.frame = server, frame
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(1.0 / FPS):
            self.server.publish(self.frame.view())


def wait_for(driver: WebDriver, condition: Callable[[], object], what: str) -> None:
    WebDriverWait(driver, WAIT_S).until(lambda _: condition(), message=f"timed out waiting for {what}")


def test_panel_drives_the_controls_and_shows_the_preview(browser: WebDriver) -> None:
    state = ControlState(Controls())
    with ControlServer(state, port=0) as server:
        publisher = Publisher(server, webcam_frame())
        publisher.start()
        try:
            run_panel(browser, server, state)
        finally:
            publisher.stop.set()
            publisher.join(WAIT_S)


def run_panel(driver: WebDriver, server: ControlServer, state: ControlState) -> None:
    js = driver.execute_script
    base = server.url.split("?")[0]
    driver.get(base)  # no token yet
    assert "Open the link livemood printed" in driver.find_element(By.TAG_NAME, "body").text

    server.set_status(engine="warp", face=True, fps=30.0, latency_ms={"p50": 38.0, "p95": 52.0})
    driver.get(server.url)
    wait_for(driver, lambda: driver.find_elements(By.CSS_SELECTOR, "#emotions button"), "the emotion buttons")
    assert "token=" not in driver.current_url  # the cookie carries it now
    buttons = {b.get_attribute("data-emotion"): b for b in driver.find_elements(By.CSS_SELECTOR, "#emotions button")}
    key_of = {name: key for key, name in EMOTION_BY_KEY.items()}
    assert {name: b.find_element(By.TAG_NAME, "kbd").text for name, b in buttons.items()} == key_of
    wait_for(driver, lambda: driver.find_element(By.ID, "connection").text == "live", "the WebSocket")
    assert driver.find_element(By.ID, "engine").text == "warp"
    assert driver.find_element(By.ID, "face").text == "found"
    assert driver.find_element(By.ID, "expressiveness-row").is_displayed() == hasattr(Controls(), "expressiveness")

    buttons["sad"].click()
    wait_for(driver, lambda: state.get().emotion == "sad", "the click on sad")
    wait_for(driver, lambda: buttons["sad"].get_attribute("aria-pressed") == "true", "sad to show as chosen")

    js("const s = document.getElementById('intensity'); s.value = arguments[0];"
       "s.dispatchEvent(new Event('input', {bubbles: true})); s.dispatchEvent(new Event('change', {bubbles: true}));",
       "0.6")
    wait_for(driver, lambda: state.get().intensity == 0.6, "the slider")

    keys = ActionChains(driver)
    keys.send_keys(key_of["angry"]).perform()
    wait_for(driver, lambda: state.get().emotion == "angry", "the shortcut for angry")
    keys.send_keys("+").perform()
    wait_for(driver, lambda: state.get().intensity == 0.7, "'+' to step intensity like the hotkey")
    keys.send_keys(" ").perform()
    wait_for(driver, lambda: state.get().bypass, "Space to turn bypass on")
    wait_for(driver, lambda: driver.find_element(By.ID, "bypass-badge").is_displayed(), "the bypass badge")
    keys.send_keys("0").perform()
    wait_for(driver, lambda: not state.get().bypass, "0 to turn bypass off")

    apply_key(state, key_of["happy"])  # a hotkey, from outside the page: the WebSocket shows it
    wait_for(driver, lambda: buttons["happy"].get_attribute("aria-pressed") == "true", "a hotkey's change on the page")

    natural_width = "return document.getElementById('preview').naturalWidth"
    wait_for(driver, lambda: js(natural_width) > 0, "the preview's first frame")
    assert js(natural_width) == PREVIEW_MAX_WIDTH
    assert not driver.find_element(By.ID, "no-preview").is_displayed()

    if os.environ.get("LIVEMOOD_SCREENSHOT") == "1":
        state.update(emotion="sad", intensity=0.6, bypass=False)
        wait_for(driver, lambda: buttons["sad"].get_attribute("aria-pressed") == "true"
                 and driver.find_element(By.ID, "intensity-value").text == "0.60", "the showcase state on the page")
        SCREENSHOT.parent.mkdir(exist_ok=True)
        assert driver.save_screenshot(str(SCREENSHOT))
