"""The web chat page at / in a real headless Chromium (Debian's chromium + chromium-driver): type a message,
see the streamed answer appear, reset. Skips without a browser; fails under NANOWHALE_REQUIRE_BROWSER=1."""

import os
import shutil

import pytest

import nanowhale as nw
from nanowhale.serve import Engine, Sampling, build_app
from server_fixtures import running_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


def browser():
    missing = [name for name, path in (("chromium", CHROMIUM), ("chromedriver", DRIVER)) if not path]
    if missing:
        reason = f"no {' or '.join(missing)} on PATH (Debian: apt-get install chromium chromium-driver)"
        if os.environ.get("NANOWHALE_REQUIRE_BROWSER") == "1":
            pytest.fail(reason + ", and NANOWHALE_REQUIRE_BROWSER=1")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(DRIVER), options=opts)


def test_page_streams_an_answer_keeps_the_conversation_and_resets(micro_run):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser()
    app, name = build_app(str(micro_run), max_tokens=64, model_name="whale-page")
    engine = Engine(nw.load(micro_run))
    try:
        with running_server(app) as url:
            driver.get(url + "/")
            wait = WebDriverWait(driver, 30)
            wait.until(lambda d: d.find_element(By.ID, "model").text == "whale-page")
            for field, value in (("temperature", "0"), ("max_tokens", "20")):
                box = driver.find_element(By.ID, field)
                box.clear()
                box.send_keys(value)
            messages = [("hello whale", None), ("and the fish?", None)]
            history = []
            for i, (text, _) in enumerate(messages):
                driver.find_element(By.ID, "input").send_keys(text)
                driver.find_element(By.ID, "send").click()
                done = ".msg.assistant[data-state='done']"
                wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, done)) == i + 1)
                history.append({"role": "user", "content": text})
                want = "".join(d.text for d in engine.chat(history, Sampling(max_tokens=20, temperature=0.0, top_k=50)))
                history.append({"role": "assistant", "content": want})
                shown = driver.find_elements(By.CSS_SELECTOR, ".msg")
                assert [e.get_attribute("class") for e in shown] == ["msg user", "msg assistant"] * (i + 1)
                assert shown[-2].text == text
                assert shown[-1].get_attribute("textContent") == want  # the whole conversation was sent
            assert not driver.find_elements(By.CSS_SELECTOR, ".msg.error")
            driver.find_element(By.ID, "reset").click()
            assert driver.find_elements(By.CSS_SELECTOR, ".msg") == []
            assert driver.execute_script("return history.length") == 0
    finally:
        driver.quit()
