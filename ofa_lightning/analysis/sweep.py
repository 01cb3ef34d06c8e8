"""A sweep's runs side by side: find them, label them, one comparison row per run.

A sweep dir is a Hydra multirun dir (``ofa-train -m mixture=a,b,c`` → ``<sweep>/<job num>/…``, each job with
``.hydra/overrides.yaml``), or any folder holding run dirs at any depth (a run dir has ``config_resolved.yaml`` or
``final_metrics.json``). Each run is labelled by its mixture (the ``mixture=`` override, Hydra's recorded choice,
or the mixture's source names) plus the other overrides that differ between the runs.

:func:`compare` gives one row per run with the headline metric of each evaluated source (CIDEr for captioning,
VQA accuracy, Acc@0.5 for grounding, …) and its loss, from ``final_metrics.json``. :func:`summarize` groups the
runs that differ only by ``seed`` (:func:`seed_groups`) and gives, per metric, the mean over the seeds, the
half-width of its 95 % confidence interval (Student's t with ``seeds - 1`` degrees of freedom: the spread of the
seeds, not of the evaluation samples) and the number of samples each run evaluated for it.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from .runs import CONFIG_FILE, FINAL_FILE, Run, is_run_dir, load_run

__all__ = [
    "find_runs",
    "latest_sweep",
    "hydra_overrides",
    "mixture_name",
    "run_labels",
    "load_sweep",
    "compare",
    "metric_columns",
    "seed_groups",
    "summarize",
    "display_summary",
    "evaluated_samples",
    "confidence_interval",
    "HEADLINE",
    "NoRunsError",
]

# metric name -> display name, in the order columns are shown (``loss`` last)
HEADLINE = {"cider": "CIDEr", "vqa_acc": "VQA acc", "acc": "Acc@0.5", "accuracy": "accuracy", "loss": "loss"}
_SKIP_DIRS = {"wandb", "checkpoints", "predictions", "tokenizer", ".hydra"}


class NoRunsError(FileNotFoundError):
    """The folder holds no run dir."""


def find_runs(sweep_dir: str | Path) -> list[Path]:
    """Every run dir under ``sweep_dir`` (itself included), in natural order (``2`` before ``10``); run dirs are
    not searched further (their ``wandb/``, ``checkpoints/``… hold no runs)."""
    root = Path(sweep_dir).expanduser()
    if not root.is_dir():
        raise NoRunsError(f"{root} is not a directory")
    found: list[Path] = []

    def walk(folder: Path) -> None:
        if is_run_dir(folder):
            found.append(folder.resolve())
            return
        for child in sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink()):
            if child.name not in _SKIP_DIRS and not child.name.startswith("."):
                walk(child)

    walk(root)
    return sorted(found, key=lambda p: _natural(str(p.relative_to(root.resolve())) if p != root.resolve() else ""))


def _natural(text: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def latest_sweep(root: str | Path | None = None) -> Path:
    """The newest Hydra multirun dir under ``root`` (default: ``runs/`` in the working directory, where ``ofa-train``
    writes): a folder with Hydra's ``multirun.yaml``, or one named ``multirun-*``."""
    root = Path(root) if root is not None else Path.cwd() / "runs"
    found: set[Path] = set()
    if root.is_dir():
        found.update(p.parent for p in root.rglob("multirun.yaml"))
        found.update(p for p in root.rglob("multirun-*") if p.is_dir())
    if not found:
        raise NoRunsError(
            f"no sweep (Hydra multirun dir) under {root}: run one (ofa-train -m mixture=a,b) or point at one"
        )
    return max(found, key=lambda p: p.stat().st_mtime)


def hydra_overrides(run_dir: str | Path) -> list[str]:
    """The job's command-line overrides (``.hydra/overrides.yaml``; ``[]`` when absent)."""
    path = Path(run_dir) / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    from omegaconf import OmegaConf

    loaded = OmegaConf.to_container(OmegaConf.load(path))
    return [str(o) for o in loaded] if isinstance(loaded, list) else []


def _hydra_choice(run_dir: Path, group: str) -> str | None:
    path = run_dir / ".hydra" / "hydra.yaml"
    if not path.is_file():
        return None
    from omegaconf import OmegaConf

    try:
        choices = OmegaConf.to_container(OmegaConf.load(path), resolve=False)["hydra"]["runtime"]["choices"]
    except (KeyError, TypeError, ValueError):
        return None
    value = choices.get(group) if isinstance(choices, dict) else None
    return str(value) if value else None


def mixture_name(run: Run, overrides: list[str] | None = None) -> str:
    """``mixture=<name>`` from the overrides, else Hydra's recorded choice, else the sources joined by ``+``."""
    for o in overrides if overrides is not None else hydra_overrides(run.path):
        key, _, value = o.lstrip("+~").partition("=")
        if key == "mixture" and value:
            return value
    choice = _hydra_choice(run.path, "mixture")
    if choice:
        return choice
    mixture = run.config.get("mixture") or (run.config.get("data") or {}).get("mixture") or {}
    if isinstance(mixture, dict):
        names = [name for name, entry in mixture.items() if entry is not None]
    else:
        names = [str(e.get("name", e.get("task"))) for e in mixture if e is not None]
    return "+".join(names) or "?"


def run_labels(runs: list[Run], ignore: tuple[str, ...] = ()) -> list[str]:
    """One label per run: its mixture name, plus the non-mixture overrides whose values differ between runs
    (keys in ``ignore`` left out); made unique with the run dir name when two runs would share one."""
    overrides = [hydra_overrides(r.path) for r in runs]
    parsed = [dict(o.lstrip("+~").partition("=")[::2] for o in ov) for ov in overrides]
    keys = sorted({k for p in parsed for k in p if k != "mixture" and k not in ignore})
    varying = [k for k in keys if len({p.get(k) for p in parsed}) > 1]
    labels = []
    for run, ov, p in zip(runs, overrides, parsed):
        extra = ", ".join(f"{k}={p[k]}" for k in varying if k in p)
        labels.append(mixture_name(run, ov) + (f" ({extra})" if extra else ""))
    counts = {lab: labels.count(lab) for lab in labels}
    return [f"{lab} [{run.path.name}]" if counts[lab] > 1 else lab for lab, run in zip(labels, runs)]


def load_sweep(sweep_dir: str | Path) -> list[Run]:
    runs = [load_run(p) for p in find_runs(sweep_dir)]
    if not runs:
        raise NoRunsError(f"no runs under {Path(sweep_dir)}: no folder there has {CONFIG_FILE} or {FINAL_FILE}")
    return runs


def metric_columns(
    final: dict[str, float], stage: str = "test", metrics: tuple[str, ...] | None = None
) -> dict[str, str]:
    """``{column name: metric key}`` for the headline metrics of a run's final metrics: ``<source> <display>``
    (``caption CIDEr``, ``vqa VQA acc``, ``grounding Acc@0.5``, ``caption loss``…) from
    ``<stage>/<source>/<metric>``, ordered by metric then source."""
    wanted = tuple(HEADLINE) if metrics is None else tuple(metrics)
    entries = []
    for key in final:
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == stage and parts[2] in wanted:
            entries.append((wanted.index(parts[2]), parts[1], parts[2], key))
    return {f"{source} {HEADLINE.get(metric, metric)}": key for _, source, metric, key in sorted(entries)}


def compare(
    sweep: str | Path | list[Run],
    stage: str = "test",
    metrics: tuple[str, ...] | None = None,
    extra: tuple[str, ...] = ("train/loss", "wall_seconds"),
) -> pd.DataFrame:
    """One row per run, indexed by label: ``mixture``, the headline metric columns of every run (NaN where a run
    did not evaluate that source), the ``extra`` keys and ``run_dir``."""
    runs = load_sweep(sweep) if not isinstance(sweep, list) else sweep
    if not runs:
        raise NoRunsError("no runs to compare")
    labels = run_labels(runs)
    ordered = metric_columns({key: 0.0 for run in runs for key in run.final}, stage, metrics)
    rows = []
    for run in runs:
        row: dict[str, Any] = {"mixture": mixture_name(run)}
        for name, key in ordered.items():
            row[name] = float(run.final.get(key, math.nan))
        for key in extra:
            row[key] = float(run.final.get(key, math.nan))
        row["run_dir"] = str(run.path)
        rows.append(row)
    return pd.DataFrame(rows, index=pd.Index(labels, name="run"))


# ------------------------------------------------------------------------------------------------ seeds
SEED_KEY = "seed"
# config keys that name or place a run rather than change what it computes
_NOT_SETTINGS = ("seed", "run_name", "paths", "logger", "tags", "sweep_name", "resume")


def _settings(run: Run) -> str:
    """What makes a run's result what it is, apart from its seed: its overrides without ``seed`` (a Hydra job),
    else its resolved config without the keys that only name or place it."""
    if (run.path / ".hydra" / "overrides.yaml").is_file():
        parsed = dict(o.lstrip("+~").partition("=")[::2] for o in hydra_overrides(run.path))
        parsed.pop(SEED_KEY, None)
        return repr(sorted(parsed.items()))
    return repr(sorted((k, repr(v)) for k, v in run.config.items() if k not in _NOT_SETTINGS))


def seed_groups(runs: list[Run]) -> dict[str, list[Run]]:
    """``{label: runs}``: runs that differ only by ``seed`` share a group, labelled like :func:`run_labels` with
    ``seed`` left out (groups in the order their first run comes)."""
    keys = [_settings(r) for r in runs]
    firsts = list(dict.fromkeys(keys))
    labels = run_labels([runs[keys.index(k)] for k in firsts], ignore=(SEED_KEY,))
    return {label: [r for r, k in zip(runs, keys) if k == key] for label, key in zip(labels, firsts)}


def confidence_interval(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """(mean, half-width of the ``level`` confidence interval of the mean) of ``values`` (NaNs left out), with
    Student's t; the half-width is NaN with fewer than two values."""
    import numpy as np
    from scipy import stats

    data = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if data.size == 0:
        return math.nan, math.nan
    if data.size < 2:
        return float(data[0]), math.nan
    sem = float(data.std(ddof=1)) / math.sqrt(data.size)
    return float(data.mean()), float(stats.t.ppf(0.5 + level / 2, data.size - 1) * sem)


def evaluated_samples(run: Run, stage: str = "test") -> dict[str, int]:
    """``{source: samples}`` the run's last ``stage`` evaluation scored (the records ``OFALitModule`` wrote to
    ``predictions/<stage>_<source>_step<N>.jsonl``; padding rows are not written)."""
    from .runs import prediction_files

    files = prediction_files(run.path)
    files = files[(files["stage"] == stage) & (files["kind"] == "records")]
    if files.empty:
        return {}
    last = files[files["step"] == files["step"].max()]
    return {
        str(source): sum(1 for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip())
        for source, path in zip(last["source"], last["path"])
    }


def summarize(
    sweep: str | Path | list[Run],
    stage: str = "test",
    metrics: tuple[str, ...] | None = None,
    extra: tuple[str, ...] = ("train/loss", "wall_seconds"),
    level: float = 0.95,
) -> pd.DataFrame:
    """One row per :func:`seed_groups` group, indexed by its label: ``mixture``, ``seeds`` (runs in the group),
    then for each headline metric column ``M`` of :func:`compare` (and each ``extra`` key): ``M`` (mean over the
    seeds), ``M ±95%`` (half-width of the confidence interval; NaN for one seed) and, for evaluation metrics,
    ``M n`` (samples each run evaluated for it; the smallest when the seeds differ); ``run_dirs`` last."""
    runs = load_sweep(sweep) if not isinstance(sweep, list) else sweep
    if not runs:
        raise NoRunsError("no runs to compare")
    ordered = metric_columns({key: 0.0 for run in runs for key in run.final}, stage, metrics)
    pct = f"±{level * 100:g}%"
    rows, labels = [], []
    for label, members in seed_groups(runs).items():
        counts = [evaluated_samples(r, stage) for r in members]
        row: dict[str, Any] = {"mixture": mixture_name(members[0]), "seeds": len(members)}
        for name, key in [*ordered.items(), *((k, k) for k in extra)]:
            row[name], row[f"{name} {pct}"] = confidence_interval(
                [float(r.final.get(key, math.nan)) for r in members], level
            )
            if key in ordered.values():
                source = key.split("/")[1]
                seen = [c[source] for c in counts if source in c]
                row[f"{name} n"] = min(seen) if seen and not math.isnan(row[name]) else math.nan
        row["run_dirs"] = ";".join(str(r.path) for r in members)
        rows.append(row)
        labels.append(label)
    return pd.DataFrame(rows, index=pd.Index(labels, name="group"))


def display_summary(summary: pd.DataFrame) -> pd.DataFrame:
    """:func:`summarize`'s ``M``, ``M ±95%``, ``M n`` columns as one text column ``M`` per metric:
    ``0.412 ± 0.031 (n=500)`` (no ``±`` part for one seed; ``n/a`` for a metric the group did not evaluate)."""

    def number(value: float) -> str:
        return "n/a" if math.isnan(value) else f"{value:.4g}"

    spreads = [c for c in summary.columns if " ±" in c]
    out = summary[[c for c in summary.columns if c not in spreads and not c.endswith(" n")]].copy()
    for column in spreads:
        name = column.rsplit(" ±", 1)[0]
        counts = summary[f"{name} n"] if f"{name} n" in summary.columns else [math.nan] * len(summary)
        cells = []
        for mean, half, n in zip(summary[name], summary[column], counts):
            text = number(float(mean))
            if not math.isnan(mean) and not math.isnan(half):
                text += f" ± {number(float(half))}"
            if not math.isnan(mean) and not math.isnan(n):
                text += f" (n={int(n)})"
            cells.append(text)
        out[name] = cells
    return out
