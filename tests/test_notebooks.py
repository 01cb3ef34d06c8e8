"""The notebooks in notebooks/: stored without outputs, parameterised by environment variables, and executed
(nbclient, a real kernel) against a tiny 2-run sweep, producing their figures."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
import pytest
from _analysis_runs import tiny_sweep

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
# notebook -> (environment variables it reads, figure files it saves, lines its outputs must show)
EXPECTED = {
    "01_inspect_run.ipynb": (
        ("OFA_RUN_DIR", "OFA_FIGURES_DIR"),
        ("curves.png", "throughput.png", "mixture.png", "gallery.png"),
        ("offline",),
    ),
    "02_compare_mixtures.ipynb": (
        ("OFA_SWEEP_DIR", "OFA_FIGURES_DIR"),
        ("sweep_metrics.png", "sweep_losses.png", "sweep_curves.png", "sweep_train_loss.png"),
        ("(2 runs)", "2 groups of seeds"),
    ),
    "03_try_the_model.ipynb": (
        ("OFA_CHECKPOINT", "OFA_SOURCE_CHECKPOINT", "OFA_TOKENIZER", "OFA_FIGURES_DIR"),
        ("try.png", "try_converted.png"),
        ("grounded_qa", "answers exactly like the original"),
    ),
}


def _read(name: str):
    return nbformat.read(NOTEBOOKS / name, as_version=4)


def test_the_three_notebooks_exist():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(EXPECTED)


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_are_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: a cell has stored outputs (clear them before committing)"
            assert cell.execution_count is None, f"{path.name}: a cell has an execution count"
        assert "execution" not in cell.get("metadata", {}), f"{path.name}: a cell keeps execution timings"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_first_code_cell_reads_the_parameters_from_the_environment(name):
    first = next(c for c in _read(name).cells if c.cell_type == "code")
    for var in EXPECTED[name][0]:
        assert f'os.environ.get("{var}")' in first.source, f"{name}: the first code cell does not read {var}"


@pytest.fixture(scope="module")
def project(tmp_path_factory, one_thread):
    return tiny_sweep(tmp_path_factory)


def _execute(name: str, env: dict[str, str], cwd: Path):
    from nbclient import NotebookClient

    nb = _read(name)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute(env=env)
    return nb


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs_against_a_tiny_run_and_makes_its_figures(name, project, tmp_path):
    root, sweep_dir = project
    figures = tmp_path / "figures"
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # the kernel's inline backend shows figures
    env.update(
        {
            # the kernel spec may say plain "python": make it this interpreter
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
            "OFA_RUN_DIR": str(sweep_dir / "0"),
            "OFA_SWEEP_DIR": str(sweep_dir),
            "OFA_CHECKPOINT": str(sweep_dir / "0" / "checkpoints" / "last.ckpt"),
            "OFA_FIGURES_DIR": str(figures),
            "OFA_WORK_DIR": str(tmp_path / "work"),
            "OMP_NUM_THREADS": "1",
            "WANDB_MODE": "offline",
        }
    )
    for var in ("OFA_IMAGE", "OFA_SOURCE_CHECKPOINT", "OFA_TOKENIZER", "OFA_STAGE"):
        env.pop(var, None)
    cwd = tmp_path
    if name == "02_compare_mixtures.ipynb":  # its default: the newest sweep under runs/ of the working directory
        env.pop("OFA_SWEEP_DIR")
        cwd = root
    nb = _execute(name, env, cwd)

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    pngs = [o for o in outputs if o.output_type in ("display_data", "execute_result") and "image/png" in o.data]
    _, saved, shown = EXPECTED[name]
    assert len(pngs) >= len(saved), f"{name}: {len(pngs)} figures shown, expected {len(saved)}"
    for figure in saved:
        assert (figures / figure).is_file() and (figures / figure).stat().st_size > 1000, figure
    text = "\n".join(
        o.get("text", "") if o.output_type == "stream" else str(o.get("data", {}).get("text/plain", ""))
        for o in outputs
    )
    for line in shown:
        assert line in text, f"{name}: {line!r} not in the outputs"
    if name == "02_compare_mixtures.ipynb":
        assert f"{sweep_dir} (2 runs)" in text
