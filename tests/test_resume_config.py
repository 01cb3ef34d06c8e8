"""`ofa-train ... resume=auto` continues with the run's own config plus only the overrides given now; a shape change
is refused in one line and leaves the run dir as it was; `resume=auto` without a checkpoint says so; and
`tokenizer=checkpoint` starts a run from a kit checkpoint with that checkpoint's tokenizer. Driven through
`ofa-train` in a subprocess started in a project folder, with user-level overrides only."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from data_recipes.shapes_pipeline import build_shapes_shards

# what the user typed when the run started (debug=fdr: 3 steps, a checkpoint at step 3)
FIRST = [
    "experiment=demo",
    "debug=fdr",
    "logger=none",
    "model.encoder_layers=1",
    "model.decoder_layers=1",
    "data.micro_batch_size=4",
    "data.task_options.image_size=64",
    "trainer.precision=32-true",
    "tokenizer.max_samples=200",
    "test_after_fit=false",
]


def ofa_train(project: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="offline")
    return subprocess.run(
        [sys.executable, "-m", "ofa_lightning.cli.train", *overrides],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (the job's own log excepted) -> its content hash."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.suffix != ".log"
    }


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume_cfg")
    build_shapes_shards(root / "data" / "shapes", num_images=24, seed=3, image_size=64)
    done = ofa_train(root, *FIRST, "run_name=r")
    assert done.returncode == 0, done.stderr[-3000:]
    return root


def test_a_shape_changing_override_is_refused_and_the_run_dir_is_untouched(project):
    run = project / "runs" / "demo" / "r"
    before = snapshot(run)
    done = ofa_train(project, "experiment=demo", "run_name=r", "logger=none", "resume=auto", "model.encoder_layers=4")
    assert done.returncode == 2
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("ofa-train: error: resume from") and "model.encoder_layers: trained 1, given 4" in error
    assert "Missing key" not in done.stderr
    assert snapshot(run) == before  # config_resolved.yaml, .hydra/, checkpoints: nothing written


def test_a_multirun_job_that_cannot_resume_leaves_the_run_dir_untouched(project):
    """`-m` jobs rebuild their config from the command line: their `.hydra/` is deferred too (one temp dir per job)."""
    run = project / "runs" / "demo" / "r"
    before = snapshot(run)
    done = ofa_train(
        project,
        "-m",
        "experiment=demo",
        "logger=none",
        "resume=auto",
        "model.encoder_layers=4",
        f"hydra.sweep.dir={run.parent}",
        "hydra.sweep.subdir=r",
    )
    assert done.returncode == 2
    assert "model.encoder_layers: trained 1, given 4" in done.stderr.strip().splitlines()[-1]
    assert snapshot(run) == before


def test_resume_auto_keeps_the_runs_config_and_applies_only_the_new_overrides(project):
    run = project / "runs" / "demo" / "r"
    # the user forgot the model and data overrides of the first command, and asks for 2 more steps
    done = ofa_train(project, "experiment=demo", "run_name=r", "logger=none", "resume=auto", "trainer.max_steps=5")
    assert done.returncode == 0, done.stderr[-3000:]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 5
    saved = OmegaConf.load(run / "config_resolved.yaml")
    assert saved.model.encoder_layers == 1 and saved.data.task_options.image_size == 64
    assert saved.trainer.max_steps == 5 and saved.resume == "auto"
    assert saved.module.optim.max_steps == 5  # the LR schedule follows trainer.max_steps, as in the config
    assert ckpt["ofa_model_card"]["config"]["trainer"]["max_steps"] == 5
    assert "resume=auto" in OmegaConf.load(run / ".hydra" / "overrides.yaml")  # this job's record, moved in


@pytest.mark.slow  # two more ofa-train processes
def test_resume_auto_without_a_checkpoint_says_so(project):
    other = project / "runs" / "demo" / "other"
    other.mkdir(parents=True)
    (other / "notes.txt").write_text("another run's file")
    done = ofa_train(project, "experiment=demo", "run_name=other", "logger=none", "resume=auto")
    assert done.returncode == 2 and "resume=auto: no checkpoint at" in done.stderr.strip().splitlines()[-1]
    assert sorted(p.name for p in other.iterdir() if p.suffix != ".log") == ["notes.txt"]
    fresh = ofa_train(project, *FIRST, "run_name=fresh", "resume=auto", "trainer.max_steps=1")
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert "has no checkpoint yet: starting at step 0" in fresh.stdout + fresh.stderr
    assert (project / "runs" / "demo" / "fresh" / ".hydra" / "overrides.yaml").is_file()


def test_tokenizer_checkpoint_takes_the_init_checkpoints_tokenizer(project):
    source = project / "runs" / "demo" / "r"
    first = [o for o in FIRST if not o.startswith("tokenizer.")]  # the trained BPE's settings do not apply
    done = ofa_train(
        project,
        *first,
        "run_name=ft",
        "tokenizer=checkpoint",
        "trainer.max_steps=1",
        f"module.init_from={source / 'checkpoints' / 'last.ckpt'}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    tuned = project / "runs" / "demo" / "ft" / "tokenizer"
    assert (tuned / "vocab.json").read_text() == (source / "tokenizer" / "vocab.json").read_text()


def test_tokenizer_checkpoint_names_ofa_bpe_for_an_ofa_checkpoint(tmp_path):
    from ofa_lightning.errors import UserError
    from ofa_lightning.training.run import checkpoint_tokenizer

    converted = tmp_path / "ofa_tiny_converted.pt"
    torch.save({"model_config": {"size": "tiny"}, "state_dict": {}}, converted)
    with pytest.raises(UserError, match="tokenizer=ofa_bpe"):
        checkpoint_tokenizer(converted)
    with pytest.raises(UserError, match="module.init_from"):
        checkpoint_tokenizer(None)


def test_a_damaged_last_checkpoint_falls_back_to_the_newest_readable_one(project, tmp_path, caplog):
    import shutil

    from ofa_lightning.errors import UserError
    from ofa_lightning.training.resume import prepare_resume
    from ofa_lightning.weights.integrity import write_checksum

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    good = run / "checkpoints" / "step=3.ckpt"
    shutil.copy(project / "runs" / "demo" / "r" / "checkpoints" / "last.ckpt", good)
    last = run / "checkpoints" / "last.ckpt"
    shutil.copy(good, last)
    write_checksum(last, global_step=6)  # a newer checkpoint, with the sidecar written with it...
    last.write_bytes(good.read_bytes()[:4096])  # ...cut short afterwards
    cfg = OmegaConf.load(project / "runs" / "demo" / "r" / "config_resolved.yaml")
    cfg.resume, cfg.paths.output_dir = "auto", str(run)
    with caplog.at_level("WARNING"):
        plan = prepare_resume(cfg, run)
    assert plan.ckpt_path == str(good)
    assert "last.ckpt is damaged: not a readable zip archive" in caplog.text  # refused, named
    assert re.search(rf"continuing from {re.escape(str(good))} \(step \d+\) instead", caplog.text)
    good.unlink()
    with pytest.raises(UserError, match=r"last\.ckpt is damaged.*no other readable checkpoint"):
        prepare_resume(cfg, run)


def test_ofa_smoke_applies_to_a_resumed_runs_rebuilt_config(project):
    """`OFA_SMOKE=1` with `resume=auto`: the smoke values apply to the config rebuilt from the checkpoint, not only
    to keys given on the command line."""
    run = project / "runs" / "demo" / "r"
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="offline", OFA_SMOKE="1")
    done = subprocess.run(
        [sys.executable, "-m", "ofa_lightning.cli.train", "experiment=demo", "run_name=r", "resume=auto"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    saved = OmegaConf.load(run / "config_resolved.yaml")
    assert saved.data.eval.max_samples == 2 and saved.data.num_workers == 0  # smoke values, none typed
    assert saved.model.encoder_layers == 1  # the run's own config otherwise
    before = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"]
    assert saved.trainer.max_steps == before  # the smoke run is 2 steps more than the checkpoint it resumed
