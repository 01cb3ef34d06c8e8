"""Kill and resume: a run stopped after a checkpoint and relaunched with resume=auto continues exactly like an
uninterrupted run: global step, optimiser / scheduler / EMA state, the batches of every step (sample ids, across the
workers' lanes and an epoch boundary), the loss curve, and the W&B run id.

* ``test_crash_and_resume_auto_matches_an_uninterrupted_run``: in-process (the "kill" is an exception raised at
  a step after the last checkpoint), fast.
* ``test_sigkill_and_resume_auto_matches_an_uninterrupted_run`` (slow): ``python -m ofa_lightning.cli.train`` in a
  subprocess, SIGKILLed at a random step, relaunched with ``resume=auto``; W&B offline, same run id.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from data_recipes.shapes_pipeline import build_shapes_shards
from ofa_lightning.training.checkpointing import read_step_log
from ofa_lightning.training.run import compose_config, train

REPO = Path(__file__).resolve().parents[1]

# tiny model and data; 2 loader workers; 4-batch epochs (3 rounded up to the worker count); EMA on
TINY = [
    "experiment=demo",
    "data.micro_batch_size=4",
    "data.task_options.image_size=64",
    "model.encoder_layers=1",
    "model.decoder_layers=1",
    "data.num_workers=2",
    "data.batches_per_epoch=3",
    "data.shuffle_buffer=8",
    "data.segment_batches=2",
    "data.eval.num_workers=0",
    "data.eval.max_samples=4",
    "trainer.limit_val_batches=1",
    "trainer.val_check_interval=4",
    "trainer.log_every_n_steps=1",
    "test_after_fit=false",
    "module.ema={decay: 0.9}",
    "checkpoint_every_n_steps=3",
    "tokenizer.max_samples=200",
    "+tracking.step_log.enabled=true",
    "+tracking.throughput.enabled=false",
    "+tracking.predictions.enabled=false",
    "run_name=fixed",
]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume_project")
    build_shapes_shards(root / "data" / "shapes", num_images=24, seed=1, image_size=64)
    return root


class _Crash(pl.Callback):
    """Stands in for a kill: raises at the start of step ``at`` (after the checkpoint of an earlier step)."""

    def __init__(self, at: int):
        self.at = at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.at:
            raise RuntimeError(f"simulated kill at step {self.at}")


def _compare_runs(whole_dir: Path, resumed_dir: Path, max_steps: int) -> None:
    whole, resumed = read_step_log(whole_dir / "step_log"), read_step_log(resumed_dir / "step_log")
    assert [r["batch"] for r in whole] == [r["batch"] for r in resumed] == list(range(1, max_steps + 1))
    for a, b in zip(whole, resumed):
        assert (a["step"], a["epoch"], a["ids"]) == (b["step"], b["epoch"], b["ids"]), a["batch"]
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5, abs=1e-6), a["batch"]  # no jump in the loss curve
    a = torch.load(whole_dir / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(resumed_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == max_steps
    assert a["lr_schedulers"] == b["lr_schedulers"]
    for (ka, va), (kb, vb) in zip(a["state_dict"].items(), b["state_dict"].items()):
        assert ka == kb and torch.allclose(va.float(), vb.float(), rtol=1e-5, atol=1e-6), ka
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        for key in sa:
            assert torch.allclose(
                torch.as_tensor(sa[key]).float(), torch.as_tensor(sb[key]).float(), rtol=1e-5, atol=1e-7
            ), key
    for name in a["ema"]["shadow"]:
        assert torch.allclose(
            a["ema"]["shadow"][name].float(), b["ema"]["shadow"][name].float(), rtol=1e-5, atol=1e-6
        ), name
    assert a["ema"]["num_updates"] == b["ema"]["num_updates"]
    assert a["ofa_training"] == b["ofa_training"]


@pytest.mark.usefixtures("one_thread")
def test_crash_and_resume_auto_matches_an_uninterrupted_run(project, monkeypatch):
    max_steps, crash_at = 6, 5  # checkpoint at step 3 (mid-epoch 0 of 4 batches), crash at 5, epoch boundary at 4
    overrides = [*TINY, f"trainer.max_steps={max_steps}", "logger=none"]
    whole_dir = project / "runs" / "whole"
    train(compose_config(overrides, whole_dir, project))

    resumed_dir = project / "runs" / "resumed"
    cfg = compose_config([*overrides, "resume=auto"], resumed_dir, project)
    from ofa_lightning.training import run as run_module

    real = run_module.build_callbacks
    monkeypatch.setattr(run_module, "build_callbacks", lambda c, d: [*real(c, d), _Crash(crash_at)])
    with pytest.raises(RuntimeError, match=f"simulated kill at step {crash_at}"):
        train(cfg)
    monkeypatch.setattr(run_module, "build_callbacks", real)
    assert torch.load(resumed_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3
    train(cfg)  # the relaunch: same run dir, resume=auto
    _compare_runs(whole_dir, resumed_dir, max_steps)


def _launch(project: Path, run_dir: Path, overrides: list[str]) -> subprocess.Popen:
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    cmd = [
        sys.executable,
        "-m",
        "ofa_lightning.cli.train",
        *overrides,
        f"paths.root_dir={project}",
        f"hydra.run.dir={run_dir}",
    ]
    return subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )


@pytest.mark.slow
def test_sigkill_and_resume_auto_matches_an_uninterrupted_run(project):
    max_steps = 8
    overrides = [*TINY, f"trainer.max_steps={max_steps}", "logger=wandb", "logger.mode=offline"]
    whole_dir, killed_dir = project / "runs" / "proc_whole", project / "runs" / "proc_killed"
    proc = _launch(project, whole_dir, overrides)
    assert proc.wait(timeout=600) == 0, proc.stderr.read().decode()[-3000:]

    kill_at = random.Random().randint(4, max_steps - 1)  # some step after the first checkpoint (step 3)
    proc = _launch(project, killed_dir, overrides)
    log_file = killed_dir / "step_log" / "steps-rank0.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if log_file.exists() and sum(1 for _ in log_file.open()) >= kill_at:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    run_id = (killed_dir / "wandb_id").read_text().strip()
    killed_step = torch.load(killed_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert 3 <= killed_step < max_steps

    proc = _launch(project, killed_dir, [*overrides, "resume=auto"])
    assert proc.wait(timeout=600) == 0, proc.stderr.read().decode()[-3000:]
    _compare_runs(whole_dir, killed_dir, max_steps)
    assert (killed_dir / "wandb_id").read_text().strip() == run_id
    offline = sorted((killed_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 2 and all(p.name.endswith(run_id) for p in offline)  # one W&B run, two segments
    print(json.dumps({"killed_at_step": kill_at, "resumed_from": killed_step}))
