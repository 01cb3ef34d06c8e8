"""A checkpoint is the one source of truth for its model: `ofa-predict` and `OFA.load` answer what `ofa-eval`
answers, on the same samples, for caption, VQA (closed candidate set) and grounding (prompt_type prev_output), with
the demo's settings (96 px, 32 bins), from a lone copy of the checkpoint (no run dir beside it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from data_recipes.shapes_pipeline import build_shapes_shards

SHARDS = {"caption": "coco_caption", "vqa": "vqav2", "grounding": "refcoco"}
TRAIN = [
    "experiment=demo",
    "run_name=card",
    "logger=none",
    "model.encoder_layers=1",
    "model.decoder_layers=1",
    "trainer.precision=32-true",
    "trainer.max_steps=20",
    "trainer.val_check_interval=20",
    "checkpoint_every_n_steps=20",
    "data.micro_batch_size=4",
    "data.num_workers=0",
    "data.batches_per_epoch=20",
    "data.eval.num_workers=0",
    "data.eval.max_samples=6",
    "tokenizer.max_samples=200",
    "test_after_fit=false",
]


def _command(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="offline")
    proc = subprocess.run(
        [sys.executable, "-m", f"ofa_lightning.cli.{name}", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny demo run trained by `ofa-train`; its checkpoint copied on its own into another folder."""
    project = tmp_path_factory.mktemp("card_project")
    build_shapes_shards(project / "data" / "shapes", num_images=30, seed=2, image_size=96)
    _command("train", *TRAIN, cwd=project)
    ckpt = project / "runs" / "demo" / "card" / "checkpoints" / "last.ckpt"
    user = tmp_path_factory.mktemp("elsewhere")
    lone = user / "model.ckpt"
    shutil.copy(ckpt, lone)
    return project, user, lone, ckpt


@pytest.fixture(scope="module")
def evaluated(trained):
    """`ofa-eval` of the run's checkpoint: its test predictions by task."""
    project, _, _, ckpt = trained
    _command("eval", f"ckpt_path={ckpt}", "run_name=ev", cwd=project)
    predictions = {}
    for path in (project / "runs" / "eval" / "ev" / "predictions").glob("test_*.jsonl"):
        source = path.name.split("_")[1]
        predictions[source] = [json.loads(line) for line in path.read_text().splitlines()]
    return predictions


def _samples(project: Path, task: str) -> dict[str, tuple[dict, bytes]]:
    from ofa_lightning.data.shards import iter_tar_samples, resolve_shards

    out = {}
    for url in resolve_shards(str(project / "data" / "shapes" / "shards" / SHARDS[task]), "test"):
        for sample in iter_tar_samples(url):
            fields = json.loads(sample["json"])
            out[fields["id"]] = (fields, sample["jpg"])
    return out


def _same_box(got, expected) -> bool:
    if all(v != v for v in expected):  # evaluation's NaN box: not 4 bins
        return got is None
    return got is not None and got == pytest.approx(expected, abs=1e-6)


def test_the_checkpoint_carries_its_model_card(trained):
    from ofa_lightning.api import OFA

    _, user, lone, _ = trained
    card = torch.load(lone, map_location="cpu", weights_only=True)["ofa_model_card"]
    tasks = card["tasks"]
    assert tasks["grounding"]["options"]["prompt_type"] == "prev_output"
    assert {tasks[t]["options"]["image_size"] for t in SHARDS} == {96}
    assert isinstance(tasks["vqa"]["options"]["candidates"], list) and tasks["vqa"]["options"]["candidates"]
    assert card["num_bins"] == 32 and card["config"]["tokenizer"]["num_bins"] == 32
    assert set(card["tokenizer"]) == {"vocab.json", "merges.txt", "ofa_tokenizer.json"}
    assert card["decoding"]["caption"]["beam_size"] == 5
    ofa = OFA.load(lone)  # no run dir beside it
    assert ofa.task("vqa").cfg["image_size"] == 96 and ofa.task("grounding").cfg["prompt_type"] == "prev_output"
    from PIL import Image

    Image.new("RGB", (96, 96), "white").save(user / "blank.png")
    assert ofa.answer(user / "blank.png", "how many shapes are there?") in tasks["vqa"]["options"]["candidates"]


@pytest.mark.slow  # ofa-eval and three ofa-predict processes (~2 min on 2 cores)
def test_predict_and_the_python_api_answer_what_eval_answered(trained, evaluated):
    from ofa_lightning.api import OFA

    project, user, lone, _ = trained
    predictions = evaluated
    assert set(predictions) == set(SHARDS) and all(predictions.values())
    ofa = OFA.load(lone)
    assert ofa.prompt_types == {"grounding": "prev_output"} and ofa.tokenizer.num_bins == 32
    candidates = set(ofa.task("vqa").candidates)
    compared = 0
    for task, rows in predictions.items():
        samples = _samples(project, task)
        for row in rows:
            fields, jpeg = samples[row["id"]]
            image = user / f"{row['id']}.jpg"
            image.write_bytes(jpeg)  # the shard's own JPEG, as a user's file
            if task == "caption":
                assert ofa.caption(image) == row["prediction"]
            elif task == "vqa":
                answer = ofa.answer(image, fields["question"])
                assert answer == row["prediction"] and answer in candidates
            else:
                assert _same_box(ofa.ground(image, fields["expression"]), row["prediction"]), row
            compared += 1
    assert compared == sum(len(rows) for rows in predictions.values())

    # ofa-predict from the folder holding only the checkpoint: the first sample of each task
    asks = {
        "caption": lambda f: "what does the image describe?",
        "vqa": lambda f: f["question"],
        "grounding": lambda f: f' which region does the text " {f["expression"]} " describe?',
    }
    for task, rows in predictions.items():
        row = rows[0]
        fields, _ = _samples(project, task)[row["id"]]
        _command(
            "predict",
            "ckpt_path=model.ckpt",
            f"image={row['id']}.jpg",
            f"decoding={task}",
            f"prompt={json.dumps(asks[task](fields))}",
            f"run_name=p_{task}",
            cwd=user,
        )
        result = json.loads((user / "runs" / "predict" / f"p_{task}" / "prediction.json").read_text())
        if task == "grounding":
            assert _same_box(result["box"], row["prediction"]), (result, row)
        else:
            assert result["text"] == row["prediction"], (result, row)
