"""What a training run prints: a step progress bar over ``max_steps``, the final metrics table and the run dir, and
none of the warnings a CPU run could avoid (pin_memory without a GPU, worker counts, deprecations)."""

from __future__ import annotations

import os
import re
import warnings

import pytest
import torch
from omegaconf import OmegaConf

from ofa_lightning.training.callbacks import StepProgressBar, default_callbacks
from ofa_lightning.training.callbacks.console import format_run_summary

TINY = [
    "experiment=demo",
    "debug=fdr",
    "data.micro_batch_size=4",
    "data.task_options.image_size=64",
    "model.encoder_layers=1",
    "model.decoder_layers=1",
    "tokenizer.max_samples=50",
    "mixture.detection=null",
    "logger=none",
]
# warnings a CPU run must not print (the kit sets what they complain about)
AVOIDABLE = (
    r"pin_memory",
    r"does not have many workers",
    r"deprecated",
    r"Precision .* not supported",
    r"IterableDataset. has .__len__. defined",
)


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    from data_recipes.shapes_pipeline import build_shapes_shards

    root = tmp_path_factory.mktemp("console_project")
    build_shapes_shards(root / "data" / "shapes", num_images=24, seed=1, image_size=64)
    return root


def test_a_run_prints_step_progress_its_metrics_table_and_run_dir(shapes_root, tmp_path, capfd):
    from ofa_lightning.training.run import compose_config, train

    run_dir = tmp_path / "run"
    # 4 steps over 2-batch "epochs" of the stream; pinned memory asked for on a CPU-only run; loader workers
    cfg = compose_config(
        [
            *TINY,
            "trainer.max_steps=4",
            "trainer.val_check_interval=2",
            "data.batches_per_epoch=2",
            "data.pin_memory=true",
            "data.num_workers=2",
            "data.eval.num_workers=1",
        ],
        run_dir,
        shapes_root,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warnings.filterwarnings("ignore", category=ResourceWarning)  # interpreter-level, not printed by default
            metrics = train(cfg)
    finally:
        torch.set_num_threads(threads)
    out, err = capfd.readouterr()

    # the progress bar counts optimizer steps of max_steps across the stream's epochs
    steps = [int(n) for n in re.findall(r"step (\d+)/4\b", out)]
    assert steps and max(steps) == 4 and steps == sorted(steps), out[-2000:]
    assert not re.search(r"Epoch \d+:", out + err)
    # the final table: one row per source for each stage, then the loss, wall time and run dir
    summary = out[out.index("final val metrics") :]
    assert "final test metrics" in summary
    test_table = summary[summary.index("final test metrics") :].splitlines()
    assert test_table[1].split()[:1] == ["source"] and "vqa_acc" in test_table[1]
    vqa = next(line for line in test_table if line.startswith("vqa "))
    assert f"{metrics['test/vqa/vqa_acc']:.4g}" in vqa
    assert f"run dir      {run_dir.resolve()}" in summary
    assert re.search(r"wall time    \d+\.\d s", summary)
    # no avoidable warning, neither through the warnings module nor printed
    messages = [f"{w.category.__name__}: {w.message}" for w in caught]
    for pattern in AVOIDABLE:
        assert not [m for m in messages if re.search(pattern, m)], messages
        assert not re.search(pattern, err), err[-3000:]
    assert not [m for m in messages if m.startswith(("DeprecationWarning", "FutureWarning"))], messages


def test_summary_table_layout():
    text = format_run_summary(
        {
            "val/vqa/vqa_acc": 0.5,
            "val/vqa/loss": 1.25,
            "val/caption/cider": 0.1,
            "test/vqa/vqa_acc": 0.375,
            "train/loss": 2.0,
            "wall_seconds": 7200.0,
        },
        "/tmp/r",
    )
    lines = text.splitlines()
    assert lines[0] == "final val metrics" and lines[1].split() == ["source", "cider", "vqa_acc", "loss"]
    assert lines[3].split() == ["caption", "0.1"] and lines[4].split() == ["vqa", "0.5", "1.25"]
    assert "final test metrics" in lines and "train/loss   2" in lines
    assert "wall time    7200.0 s (2.00 h)" in lines and lines[-1] == "run dir      /tmp/r"


def test_progress_bar_is_a_default_callback_unless_disabled(tmp_path):
    assert any(isinstance(c, StepProgressBar) for c in default_callbacks(OmegaConf.create({}), tmp_path))
    off = OmegaConf.create({"trainer": {"enable_progress_bar": False}})
    assert not any(isinstance(c, StepProgressBar) for c in default_callbacks(off, tmp_path))


def test_worker_counts_stay_within_the_cores(caplog):
    from ofa_lightning.data import OFADataModule

    cores = len(os.sched_getaffinity(0))
    dm = OFADataModule(mixture={"caption": {"task": "caption", "shards": "unused"}}, num_workers=cores + 8)
    with caplog.at_level("INFO", logger="ofa_lightning.data.datamodule"):
        assert dm._usable_workers(cores + 8, "data.num_workers") == cores  # one rank on this machine
    assert f"data.num_workers={cores + 8} but {cores} core(s)" in caplog.text
    assert dm._usable_workers(0, "data.num_workers") == 0 and dm._usable_workers(1, "x") == 1
    dm.pin_memory = True
    assert dm._pin_memory() is torch.cuda.is_available()  # no Trainer: pinned only when a GPU exists
