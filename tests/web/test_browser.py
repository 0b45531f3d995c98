"""``df2am serve`` in a real browser: the real server (uvicorn, 127.0.0.1, a free port) and
headless Chromium through Selenium — upload the twin, check the run view's Rank-1 marks."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import faiss  # noqa: F401
import httpx
import pytest

from . import build_env

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _missing() -> str | None:
    gone = [p for p in (CHROMIUM, DRIVER) if not Path(p).exists() and not shutil.which(p)]
    if gone:
        return (f"{', '.join(gone)} not installed: apt-get install chromium chromium-driver "
                "(`make test` does it)")
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    import uvicorn

    from df2am.cli.serve_commands import bind
    from df2am.web.app import create_app

    env = build_env(tmp_path_factory.mktemp("webui"))
    app = create_app(index=env["index"], checkpoint=env["ckpt"], run=env["run"],
                     root=env["root"])
    sock = bind("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(100):
        try:
            if httpx.get(url + "/api/info", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    yield url, env
    srv.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture(scope="module")
def driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1280,1000"):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(DRIVER), options=opts)
    yield drv
    drv.quit()


def _wait(drv, css: str, timeout: float = 30):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(drv, timeout).until(
        ec.presence_of_all_elements_located((By.CSS_SELECTOR, css)))


def test_upload_twin_shows_it_first(server, driver, tmp_path: Path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    url, env = server
    driver.get(url + "/#search")
    _wait(driver, "body[data-ready='1']")
    Select(driver.find_element(By.ID, "modality")).select_by_value("rgb")
    driver.find_element(By.ID, "file").send_keys(str(env["twin"]))
    _wait(driver, "#results[data-state='done'] .result")
    first = driver.find_elements(By.CSS_SELECTOR, "#results .result")[0]
    assert first.get_attribute("data-path") == env["twin_path"].as_posix()
    assert first.get_attribute("data-rank") == "1"
    assert float(first.get_attribute("data-distance")) < 1e-4
    # The caption a person reads (issue 21): rank, distance, identity and camera from the
    # path (cam1/0005/0002.jpg), each on one unwrapped line; the full path is the tooltip.
    assert first.get_attribute("title") == env["twin_path"].as_posix()
    lines = first.find_elements(By.CSS_SELECTOR, "figcaption .line")
    assert [ln.text for ln in lines] == ["#1 · 0.000", "id 5 · cam 1"]
    for ln in lines:
        height, size = driver.execute_script(
            "const s = getComputedStyle(arguments[0]);"
            "return [arguments[0].getBoundingClientRect().height, parseFloat(s.fontSize)];", ln)
        assert height < 2 * size, (ln.text, height, size)  # one line, never wrapped
    assert env["twin_path"].as_posix() not in first.text
    img = first.find_element(By.TAG_NAME, "img")
    assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth",
                                 img) > 0
    driver.save_screenshot(str(tmp_path / "search.png"))
    assert (tmp_path / "search.png").stat().st_size > 0


def test_run_view_marks_equal_api(server, driver, tmp_path: Path):
    from selenium.webdriver.common.by import By

    url, env = server
    api = httpx.get(url + "/api/run/queries", params={"limit": 20}).json()
    driver.get(url + "/#run")
    _wait(driver, "#queries[data-state='done'] .query-row")
    rows = driver.find_elements(By.CSS_SELECTOR, "#queries .query-row")
    shown = [(r.get_attribute("data-path"), r.get_attribute("data-correct") == "1")
             for r in rows]
    assert shown == [(q["path"], q["correct"]) for q in api["queries"]]
    marks = [r.find_element(By.CSS_SELECTOR, ".mark").get_attribute("class") for r in rows]
    assert marks == ["mark ok" if ok else "mark bad" for _, ok in shown]
    assert driver.find_elements(By.CSS_SELECTOR, "#metrics tr[data-key='rank1']")
    assert driver.find_element(By.ID, "cmc-line").get_attribute("points")
    driver.save_screenshot(str(tmp_path / "run.png"))
    assert (tmp_path / "run.png").stat().st_size > 0
