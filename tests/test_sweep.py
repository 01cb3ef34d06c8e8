"""Mixture sweeps: the sweep preset's dir / W&B-group logic, the DDP-under-multirun fix
(Lightning-AI/pytorch-lightning#11617: Lightning's launcher starts each job's ranks as plain runs into that job's dir), and (slow) a real 2-job multirun with
2-process gloo DDP per job: one run dir per job, one W&B run per job in one group, nothing duplicated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from ofa_lightning.paths import CONF_DIR, REPO_ROOT
from ofa_lightning.training import hydra_ddp


def _hydra_job_cfg(overrides, tmp_path, job_overrides, mode="MULTIRUN"):
    """A composed config with its hydra node set up as Hydra would for one job of a multirun."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, f"paths.root_dir={tmp_path}"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.hydra.mode = mode
        cfg.hydra.job.name = "train"
        cfg.hydra.job.config_name = "train"
        cfg.hydra.job.num = 1
        cfg.hydra.overrides.task = list(job_overrides)
        cfg.hydra.overrides.hydra = ["hydra.sweep.dir=/somewhere", "hydra/launcher=basic", "hydra.verbose=true"]
        cfg.hydra.runtime.output_dir = str(tmp_path / "sweep" / "1")
        cfg.hydra.runtime.cwd = str(tmp_path)
    return cfg


def test_ddp_child_of_a_multirun_job_is_a_plain_run_of_that_job(tmp_path):
    cfg = _hydra_job_cfg(["experiment=mixture_sweep"], tmp_path, ["experiment=mixture_sweep", "mixture=vqa_only"])
    HydraConfig.instance().set_config(cfg)
    try:
        command, cwd = hydra_ddp.job_subprocess_cmd(1, extra=["run_name='r1'"])
    finally:
        HydraConfig.instance().cfg = None
    assert command[:3] == [sys.executable, "-m", "ofa_lightning.cli.train"]
    assert "-m" not in command[3:] and "--multirun" not in command  # no sweep in the child
    assert "mixture=vqa_only" in command and "experiment=mixture_sweep" in command  # this job's point only
    assert f"hydra.run.dir='{tmp_path / 'sweep' / '1'}'" in command  # the job's own dir
    assert "hydra.output_subdir=null" in command and "hydra.job.name=train_rank1" in command
    assert "hydra.verbose=true" in command
    assert not any(c.startswith(("hydra.sweep.dir", "hydra/launcher")) for c in command)
    assert "run_name='r1'" in command and cwd == str(tmp_path)


def test_install_patches_lightnings_launchers():
    import lightning_fabric.strategies.launchers.subprocess_script as fabric_launcher
    import pytorch_lightning.strategies.launchers.subprocess_script as pl_launcher

    saved = (fabric_launcher._hydra_subprocess_cmd, pl_launcher._hydra_subprocess_cmd)
    try:
        hydra_ddp.install(["run_name=x"])
        assert pl_launcher._hydra_subprocess_cmd is hydra_ddp._patched
        assert fabric_launcher._hydra_subprocess_cmd is hydra_ddp._patched
    finally:
        fabric_launcher._hydra_subprocess_cmd, pl_launcher._hydra_subprocess_cmd = saved


def test_job_scope_restores_the_distributed_environment(monkeypatch):
    for key in hydra_ddp.DIST_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.1")  # set from outside: kept
    with hydra_ddp.job_scope():
        os.environ.update(LOCAL_RANK="0", WORLD_SIZE="2", MASTER_PORT="12345", MASTER_ADDR="127.0.0.1")
    assert "LOCAL_RANK" not in os.environ and "WORLD_SIZE" not in os.environ and "MASTER_PORT" not in os.environ
    assert os.environ["MASTER_ADDR"] == "10.0.0.1"


def test_sweep_preset_puts_each_job_in_its_own_dir_and_one_wandb_group(tmp_path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["experiment=mixture_sweep", f"paths.root_dir={tmp_path}", "sweep_name=ablation7"],
            return_hydra_config=True,
        )
    GlobalHydra.instance().clear()
    assert cfg.logger.group == "ablation7" and cfg.logger.mode == "offline"
    sweep = OmegaConf.to_container(cfg.hydra.sweep, resolve=False)
    assert sweep["subdir"] == "${hydra.job.num}"  # one dir per job
    assert sweep["dir"].startswith("${paths.log_dir}/${task_name}/${sweep_name}-")


def _run_dirs(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if p.is_dir())


@pytest.mark.slow
def test_multirun_of_two_jobs_with_two_process_gloo_ddp(tmp_path):
    """``ofa-train -m experiment=mixture_sweep mixture=caption_only,vqa_only`` with 2 CPU DDP ranks per job."""
    from data_recipes.shapes_pipeline import build_shapes_shards

    build_shapes_shards(tmp_path / "data" / "shapes", num_images=24, seed=2, image_size=64)
    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable,
        "-m",
        "ofa_lightning.cli.train",
        "-m",
        "experiment=mixture_sweep",
        "mixture=caption_only,vqa_only",
        "debug=fdr",
        "sweep_name=ddp_sweep",
        f"paths.root_dir={tmp_path}",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.precision=32-true",
        "trainer.devices=2",
        "trainer.strategy.find_unused_parameters=true",
        "model.encoder_layers=1",
        "model.decoder_layers=1",
        "data.micro_batch_size=4",
        "data.task_options.image_size=64",
        "tokenizer.max_samples=200",
        "test_after_fit=false",
        f"hydra.sweep.dir={sweep}",
    ]
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO_ROOT),
    }
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    jobs = _run_dirs(sweep)
    assert [j.name for j in jobs] == ["0", "1"], jobs
    for job, mixture in zip(jobs, ["caption_only", "vqa_only"]):
        overrides = OmegaConf.load(job / ".hydra" / "overrides.yaml")
        assert f"mixture={mixture}" in overrides and not any("," in o for o in overrides)
        saved = OmegaConf.load(job / "config_resolved.yaml")
        sources = [k for k, v in saved.mixture.items() if v and "task" in v]  # options-only entries are ignored
        assert sources == [mixture.split("_")[0]] and saved.paths.output_dir == str(job)
        assert "train/loss" in json.loads((job / "final_metrics.json").read_text())
        offline = list((job / "wandb").glob("offline-run-*"))
        assert len(offline) == 1, offline  # one W&B run per job, none from rank 1
        log_text = (job / "mixture_sweep.log").read_text()
        assert "GLOBAL_RANK: 1" in log_text  # rank 1 ran, and logged into this job's dir
        assert (job / "checkpoints" / "last.ckpt").is_file()
    # nothing else was created: no child sweeps, no stray run dirs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "sweep"], sorted(tmp_path.iterdir())
    assert len(list(sweep.glob("*/*/.hydra"))) == 0 and len(list(sweep.rglob("multirun.yaml"))) == 1
