"""ofa-serve: the JSON API answers what the OFA façade answers, batched answers equal single ones, concurrent requests
share batches without blocking the event loop, and bad input gets a 4xx with a message (a random-weight tiny model)."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import struct
import subprocess
import sys
import time
import zlib

import httpx
import pytest
import torch
from PIL import Image

from ofa_lightning.api import OFA
from ofa_lightning.model import OFAConfig, OFAModel
from ofa_lightning.serve.app import create_app
from ofa_lightning.serve.batching import DynamicBatcher, QueueFull
from ofa_lightning.serve.engine import ServeEngine, ServeRequest
from ofa_lightning.tasks import build_task
from ofa_lightning.tokenizer import OFATokenizer

WORDS = (
    "what does the image describe which region text a red blue circle square triangle on left right is "
    "there color how many shapes yes no"
)


@pytest.fixture(scope="module")
def ofa() -> OFA:
    torch.manual_seed(0)
    tok = OFATokenizer.train_bpe(
        [WORDS] * 20 + [f" {w}" for w in WORDS.split()] * 10, bpe_vocab_size=300, num_codes=0, num_bins=32
    )
    model = OFAModel(
        OFAConfig(
            d_model=32,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            vocab_size=tok.vocab_size,
            dropout=0.0,
        )
    )
    trained = {
        "caption": build_task("caption", tok, image_size=64),
        "grounding": build_task("grounding", tok, image_size=64, max_image_size=64),
    }
    return OFA(model, tok, tasks=trained)


def _png(size=(80, 60), color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def _client(app):
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def _run(app, body):
    async def go():
        async with app.router.lifespan_context(app), _client(app) as client:
            return await body(client)

    return asyncio.run(go())


def test_health_and_info_describe_the_model(ofa):
    app = create_app(ServeEngine(ofa))

    async def body(client):
        return (await client.get("/health")).json(), (await client.get("/info")).json(), await client.get("/")

    health, info, page = _run(app, body)
    assert health["status"] == "ok"
    assert info["parameters"] == sum(p.numel() for p in ofa.model.parameters())
    assert info["tokenizer"] == {"vocab_size": ofa.tokenizer.vocab_size, "num_bins": 32, "num_codes": 0}
    assert info["trained_tasks"]["caption"]["image_size"] == 64
    assert info["tasks"]["caption"]["trained"] and not info["tasks"]["vqa"]["trained"]
    assert info["model"]["d_model"] == 32 and info["model"]["encoder_layers"] == 1
    assert not info["tasks"]["text_to_image"]["usable"] and "no image codes" in info["tasks"]["text_to_image"]["reason"]
    assert page.status_code == 200 and 'id="canvas"' in page.text and "/predict" in page.text


def test_the_api_answers_what_the_facade_answers(ofa):
    app = create_app(ServeEngine(ofa))
    image = _png()
    encoded = base64.b64encode(image).decode()

    async def body(client):
        form = await client.post(
            "/predict",
            files={"image": ("a.png", image, "image/png")},
            data={"task": "grounding", "instruction": "the red square"},
        )
        json_ = await client.post(
            "/predict", json={"task": "grounding", "instruction": "the red square", "image_base64": encoded}
        )
        caption = await client.post("/predict", json={"task": "caption", "image_base64": encoded})
        return form.json(), json_.json(), caption.json()

    form, json_, caption = _run(app, body)
    pil = Image.open(io.BytesIO(image))
    expected = ofa.generate(pil, ofa.task("grounding").instruction("the red square"), "grounding")
    assert form["prompt"] == ' which region does the text " the red square " describe?'
    assert form["text"] == json_["text"] == expected.text
    assert form["box"] == expected.box
    assert caption["prompt"] == ofa.task("caption").prompt and caption["text"] == ofa.caption(pil)
    assert caption["warning"] is None and form["latency_ms"] > 0 and form["batch_size"] == 1


def test_a_batch_answers_what_each_request_alone_answers(ofa):
    engine = ServeEngine(ofa)
    images = [Image.new("RGB", (40 + 20 * i, 50), (60 * i, 100, 200 - 50 * i)) for i in range(2)]
    for task, text in (("grounding", "the circle"), ("vqa", "what color is the square"), ("caption", "")):
        requests = [engine.prepare(ServeRequest(task, text, im)) for im in images]
        batched = engine.run_batch(task, requests)
        alone = [engine.run_batch(task, [r])[0] for r in requests]
        assert [(r.text, r.box) for r in batched] == [(r.text, r.box) for r in alone], task


def test_concurrent_requests_share_batches_and_the_loop_keeps_running():
    calls: list[int] = []

    def slow_batch(key, items):
        calls.append(len(items))
        time.sleep(0.2)
        return [f"{key}:{item}" for item in items]

    async def go():
        batcher = DynamicBatcher(slow_batch, max_batch=4, wait_ms=20, max_queue=6)
        await batcher.start()
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        tick = asyncio.create_task(ticker())
        jobs = [asyncio.create_task(batcher.submit("caption" if i % 2 else "vqa", i)) for i in range(6)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFull) as full:
            await batcher.submit("caption", 99)
        results = await asyncio.gather(*jobs)
        tick.cancel()
        await batcher.stop()
        return results, ticks, full.value

    results, ticks, full = asyncio.run(go())
    assert [r for r, _ in results] == [f"{'caption' if i % 2 else 'vqa'}:{i}" for i in range(6)]
    assert sorted(calls, reverse=True)[:2] == [2, 2] and max(calls) > 1  # same-task requests shared batches
    assert all(size == calls[0] or size in calls for _, size in results)
    assert ticks >= 20  # the event loop ran during ~0.6 s of model time
    assert full.retry_after >= 1


def test_a_full_queue_answers_429_with_retry_after(ofa):
    engine = ServeEngine(ofa)
    run = engine.run_batch
    engine.run_batch = lambda task, items: (time.sleep(0.3), run(task, items))[1]
    app = create_app(engine, max_batch=1, max_queue=2)

    async def body(client):
        def post():
            return client.post(
                "/predict",
                files={"image": ("a.png", _png(), "image/png")},
                data={"task": "caption"},
            )

        return await asyncio.gather(*(post() for _ in range(5)))

    responses = _run(app, body)
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) >= 2 and 429 in codes
    busy = next(r for r in responses if r.status_code == 429)
    assert int(busy.headers["Retry-After"]) >= 1 and "busy" in busy.json()["detail"]


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels in a few dozen bytes (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "fields, upload, status, message",
    [
        ({"task": "caption"}, b"this is no image", 400, "not an image"),
        ({"task": "caption"}, _png_header_only(100_000, 100_000), 413, "image too large"),
        ({"task": "vqa", "instruction": "   "}, _png(), 400, "empty instruction"),
        ({"task": "vqa", "instruction": "why " * 200}, _png(), 413, "instruction too long"),
        ({"task": "painting"}, _png(), 400, "unknown task 'painting'"),
        ({"task": "text_to_image", "instruction": "a cat"}, None, 400, "cannot generate images"),
        ({"task": "grounded_caption"}, _png(), 400, "needs region"),
        ({"task": "grounded_caption", "region": "1,2,3"}, _png(), 400, "4 numbers"),
        ({"task": "caption"}, None, 400, "needs an image"),
    ],
)
def test_bad_input_gets_a_4xx_with_a_message(ofa, fields, upload, status, message):
    app = create_app(ServeEngine(ofa))

    async def body(client):
        files = {"image": ("x.png", upload, "image/png")} if upload is not None else None
        bad = await client.post("/predict", data=fields, files=files)
        good = await client.post(
            "/predict", files={"image": ("a.png", _png(), "image/png")}, data={"task": "caption"}
        )  # the worker is still alive
        return bad, good

    bad, good = _run(app, body)
    assert bad.status_code == status, bad.text
    assert message in bad.json()["detail"]
    assert good.status_code == 200


def test_other_bad_requests(ofa):
    app = create_app(ServeEngine(ofa), max_upload_mb=0.001)

    async def body(client):
        return (
            await client.post("/predict", content=b"x", headers={"content-type": "text/plain"}),
            await client.post("/predict", json={"task": "caption", "image_base64": "%%%"}),
            await client.post(
                "/predict", files={"image": ("a.png", os.urandom(5000), "image/png")}, data={"task": "caption"}
            ),
        )

    wrong_type, bad_base64, too_big = _run(app, body)
    assert wrong_type.status_code == 415 and "multipart/form-data" in wrong_type.json()["detail"]
    assert bad_base64.status_code == 400 and "base64" in bad_base64.json()["detail"]
    assert too_big.status_code == 413


def test_an_untrained_task_is_warned_and_answered(ofa, caplog):
    app = create_app(ServeEngine(ofa))

    async def body(client):
        return await client.post(
            "/predict",
            files={"image": ("a.png", _png(), "image/png")},
            data={"task": "image_text_matching", "instruction": "a red square"},
        )

    with caplog.at_level("INFO", logger="ofa_lightning.serve"):
        response = _run(app, body)
    assert response.status_code == 200
    assert "not trained on 'image_text_matching'" in response.json()["warning"]
    assert response.json()["prompt"] == ' does the image describe " a red square "?'
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("POST /predict 200") and "task=image_text_matching" in line for line in lines)


def test_cli_help_default_host_and_one_line_errors(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("OFA_DEBUG", None)
    help_ = subprocess.run(
        [sys.executable, "-m", "ofa_lightning.cli.serve", "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert help_.returncode == 0 and "ofa-serve" in help_.stdout and "/predict" in help_.stdout
    cfg = subprocess.run(
        [sys.executable, "-m", "ofa_lightning.cli.serve", "ckpt_path=x.ckpt", "--cfg", "job"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "host: 127.0.0.1" in cfg.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "ofa_lightning.cli.serve", "ckpt_path=nowhere.ckpt"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1] == "ofa-serve: error: checkpoint not found: nowhere.ckpt"


def test_text_to_image_answers_a_png(tmp_path):
    from ofa_lightning.vq import VQConfig, VQModel

    torch.manual_seed(0)
    tok = OFATokenizer.train_bpe(["a red circle on a blue square"] * 10, bpe_vocab_size=300, num_codes=16, num_bins=8)
    model = OFAModel(
        OFAConfig(
            d_model=32,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            code_image_size=32,
            vocab_size=tok.vocab_size,
            dropout=0.0,
        )
    )
    VQModel(VQConfig.preset("shapes_small", n_embed=12, ch=8, norm_groups=4, resolution=32)).save(tmp_path / "vq.pt")
    without_vq = ServeEngine(OFA(model, tok)).available_tasks()["text_to_image"]
    assert not without_vq["usable"] and "vq_path" in without_vq["reason"]
    app = create_app(ServeEngine(OFA(model, tok), vq_path=str(tmp_path / "vq.pt"), t2i_samples=2))

    async def body(client):
        return await client.post("/predict", json={"task": "text_to_image", "instruction": "A red circle"})

    response = _run(app, body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["prompt"] == " what is the complete image? caption: a red circle" and answer["text"] == "a red circle"
    image = Image.open(io.BytesIO(base64.b64decode(answer["image_png_base64"])))
    assert image.format == "PNG" and image.size == (32, 32)
