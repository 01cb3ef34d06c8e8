"""The README's sweep as a user runs it: ``ofa-train -m`` over two mixtures from a directory that holds nothing but
the shards it made, no ``paths.*`` given, the basic launcher, ``OFA_SMOKE=1`` for a seconds-long job each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

BIN = Path(sys.executable).parent


@pytest.mark.slow
def test_mixture_sweep_from_an_empty_dir_gives_each_job_its_own_run_dir(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OFA_", "HYDRA_"))}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", OFA_SMOKE="1")

    def run(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(list(args), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-4000:]
        return proc

    run(
        sys.executable,
        "-m",
        "data_recipes.shapes_pipeline",
        "--root",
        "data/shapes",
        "--num-images",
        "24",
        "--image-size",
        "64",
    )
    run("ofa-train", "-m", "experiment=mixture_sweep", "mixture=caption_only,vqa_only", "sweep_name=mix_v1")

    sweeps = list((tmp_path / "runs" / "mixture_sweep").glob("mix_v1-*"))
    assert len(sweeps) == 1, sweeps
    jobs = sorted(p for p in sweeps[0].iterdir() if p.is_dir())
    assert [j.name for j in jobs] == ["0", "1"]
    for job, mixture in zip(jobs, ["caption_only", "vqa_only"]):
        saved = OmegaConf.load(job / "config_resolved.yaml")
        assert saved.paths.output_dir == str(job) and saved.paths.root_dir == str(tmp_path.resolve())
        assert [k for k, v in saved.mixture.items() if v and "task" in v] == [mixture.split("_")[0]]
        assert saved.trainer.max_steps == 2 and saved.data.eval.max_samples == 2  # OFA_SMOKE
        assert f"mixture={mixture}" in OmegaConf.load(job / ".hydra" / "overrides.yaml")
        metrics = json.loads((job / "final_metrics.json").read_text())
        assert "train/loss" in metrics and any(k.startswith("test/") for k in metrics)
        assert (job / "checkpoints" / "last.ckpt").is_file()
        assert len(list((job / "wandb").glob("offline-run-*"))) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "runs"]
