"""ofa-serve in a real browser: headless Chromium (Debian's, driven by Selenium) uploads an image to the page, asks
for a caption and a grounding box, and the page shows the answers the API gives, with the box drawn on the canvas;
a screenshot is kept in the test's tmp dir. The checkpoint is a short `ofa-train` run of the demo experiment."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from data_recipes.shapes_pipeline import build_shapes_shards

pytestmark = pytest.mark.slow

APT = "apt-get update && apt-get install -y chromium chromium-driver"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
TRAIN = [
    "experiment=demo",
    "run_name=serve",
    "logger=none",
    "model.encoder_layers=1",
    "model.decoder_layers=1",
    "trainer.precision=32-true",
    "trainer.max_steps=150",
    "trainer.val_check_interval=150",
    "checkpoint_every_n_steps=150",
    "data.micro_batch_size=8",
    "data.num_workers=0",
    "data.batches_per_epoch=50",
    "data.eval.num_workers=0",
    "data.eval.max_samples=6",
    "tokenizer.max_samples=200",
    "test_after_fit=false",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`ofa-serve` of a 150-step demo checkpoint (it draws 4-bin boxes and shape captions) on a free port."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip(f"no system Chromium / chromedriver: {APT}")
    project = tmp_path_factory.mktemp("serve_project")
    build_shapes_shards(project / "data" / "shapes", num_images=30, seed=2, image_size=96)
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="offline")
    subprocess.run(
        [sys.executable, "-m", "ofa_lightning.cli.train", *TRAIN],
        cwd=project,
        env=env,
        check=True,
        capture_output=True,
        timeout=1200,
    )
    ckpt = project / "runs" / "demo" / "serve" / "checkpoints" / "last.ckpt"
    port = _free_port()
    log = open(project / "serve.out", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ofa_lightning.cli.serve", f"ckpt_path={ckpt}", f"port={port}"],
        cwd=project,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(url + "/health", timeout=2)
                break
            except OSError:
                assert proc.poll() is None, (project / "serve.out").read_text()[-3000:]
                time.sleep(1)
        image = sorted((project / "data" / "shapes").rglob("*test*/*.jpg"))[0]
        yield url, image, project
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _api(url: str, image: Path, task: str, instruction: str = "") -> dict:
    import httpx

    with open(image, "rb") as f:
        return httpx.post(
            url + "/predict",
            files={"image": (image.name, f, "image/jpeg")},
            data={"task": task, "instruction": instruction},
            timeout=120,
        ).json()


def test_page_uploads_an_image_answers_and_draws_the_box(server, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    url, image, project = server
    caption_api = _api(url, image, "caption")
    ground_api = _api(url, image, "grounding", "the red circle")
    assert ground_api["box"] is not None, ground_api  # the 150-step model answers 4 bins

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1200,1400",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(url)
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: len(Select(d.find_element(By.ID, "task")).options) > 0)
        driver.find_element(By.ID, "file").send_keys(str(image))
        wait.until(lambda d: d.execute_script("return document.getElementById('canvas').width") > 0)

        def ask(task: str, instruction: str | None):
            Select(driver.find_element(By.ID, "task")).select_by_value(task)
            if instruction is not None:
                box = driver.find_element(By.ID, "instruction")
                box.clear()
                box.send_keys(instruction)
            driver.execute_script("document.getElementById('answer').textContent = ''")
            driver.find_element(By.ID, "run").click()
            wait.until(lambda d: d.find_element(By.ID, "answer").text or d.find_element(By.ID, "error").text)
            assert not driver.find_element(By.ID, "error").text
            return driver.find_element(By.ID, "answer").text

        assert ask("caption", None) == caption_api["text"]
        assert "ms" in driver.find_element(By.ID, "latency").text
        assert ask("grounding", "the red circle") == ground_api["text"]
        drawn = json.loads(driver.find_element(By.ID, "canvas").get_attribute("data-box"))
        assert drawn == pytest.approx(ground_api["box"])
        # the middle of the box's top edge is the stroke's pure red on the canvas
        x0, y0, x1, y1 = ground_api["box"]
        pixel = driver.execute_script(
            "const c = document.getElementById('canvas').getContext('2d');"
            "return Array.from(c.getImageData(arguments[0], arguments[1], 1, 1).data);",
            int((min(x0, x1) + max(x0, x1)) / 2),
            int(min(y0, y1)),
        )
        assert pixel == [255, 0, 0, 255], pixel
        driver.find_element(By.ID, "show-prompt").click()
        assert driver.find_element(By.ID, "prompt").text.strip() == ground_api["prompt"].strip()
        shot = tmp_path / "ofa_serve_page.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 1000
    finally:
        driver.quit()
