"""A regular (not editable) ``pip install`` of the kit ships its configs: from an empty directory the installed
``ofa-train`` composes and ``ofa-prepare`` lists its recipes.

Offline and quick: the wheel is built without build isolation and installed with ``--no-deps`` into a fresh venv
that sees this environment's packages through a ``.pth`` line (torch, Hydra, ... are not reinstalled); only the kit
itself comes from the wheel, and the source checkout is not on the venv's path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
# what the wheel is built from: the checkout without environments, caches and outputs
TOP_LEVEL_SKIP = {
    ".git",
    ".venv",
    "build",
    "runs",
    "data",
    ".cache",
    ".pytest_cache",
    "wandb",
    "outputs",
    "notebooks",
    "benchmarks",
    "tests",
}


def _ignore(folder: str, names: list[str]) -> set[str]:
    skip = {n for n in names if n == "__pycache__" or n.endswith(".egg-info")}
    return skip | (TOP_LEVEL_SKIP & set(names) if Path(folder) == REPO else set())


@pytest.mark.slow
def test_regular_install_ships_conf_and_runs_from_an_empty_dir(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=_ignore)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site / "parent_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(py),
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            str(source),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )

    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OFA_", "PYTHON"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"

    def run(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(list(args), cwd=empty, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    where = run(str(py), "-c", "import ofa_lightning.paths as p; print(p.__file__); print(p.CONF_DIR)").stdout.split()
    assert where[0].startswith(str(site)), where  # the installed copy, not the checkout
    assert where[1] == str(site / "ofa_lightning" / "conf")
    installed = {
        p.relative_to(site / "ofa_lightning" / "conf") for p in (site / "ofa_lightning" / "conf").rglob("*.yaml")
    }
    assert installed == {p.relative_to(REPO / "conf") for p in (REPO / "conf").rglob("*.yaml")}

    assert yaml.safe_load(run("ofa-train", "--cfg", "job").stdout)["task_name"] == "train"
    cfg = yaml.safe_load(run("ofa-train", "experiment=demo", "--cfg", "job", "--resolve").stdout)
    assert cfg["paths"]["root_dir"] == str(empty.resolve()) and cfg["model"]["d_model"] > 0
    assert "coco_caption" in run("ofa-prepare", "--list").stdout
    assert "ofa-train: train" in run("ofa-train", "--help").stdout
    assert list(empty.iterdir()) == []  # composing and listing write nothing
