"""Matplotlib figures for runs and sweeps: curves, throughput, mixture, prediction gallery, sweep bars.

Every function returns the ``Figure`` (made with ``pyplot``, so a notebook shows it) and saves it when given
``save=<path>``. Boxes are drawn in the image's own pixels: green the reference, red the prediction. Under each
gallery image, its verdict ``✓`` (right: score >= 0.5, i.e. IoU >= 0.5 or VQA soft score >= 0.5) or ``✗`` (wrong)
with the prediction, then the prompt and the references; captions have no per-row verdict (their metric is
corpus-level).

Several runs (a sweep): each run keeps one colour and line style in every panel (:func:`run_styles`). Runs that
differ only by their seed share a colour (their group's, the same as the group's bar in :func:`plot_sweep`) and
are told apart by the line style (solid, dashed, dotted, dash-dot, in seed order).
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd

from .runs import metric_curves, throughput

__all__ = [
    "plot_curves",
    "plot_throughput",
    "plot_mixture",
    "plot_gallery",
    "plot_sweep",
    "plot_runs_curves",
    "run_styles",
    "draw_box",
    "show_image",
    "save_figure",
    "CURVE_GROUPS",
    "REFERENCE_COLOR",
    "PREDICTION_COLOR",
    "LINE_STYLES",
]

REFERENCE_COLOR = "#1a9641"
PREDICTION_COLOR = "#d7191c"
RIGHT, WRONG = "\u2713", "\u2717"
LINE_STYLES = ("-", "--", ":", "-.")  # the seeds of one group, in order
# panel title -> regex over logged keys
CURVE_GROUPS = {
    "training loss": r"^train/(loss|[^/]+/loss)$",
    "validation loss": r"^val/[^/]+/loss$",
    "validation metrics": r"^val/[^/]+/(cider|vqa_acc|acc|accuracy)$",
    "learning rate": r"^train/lr$",
}


def _plt():
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, save: str | Path | None):
    """Save ``fig`` to ``save`` (parents created) when given; returns ``fig``."""
    if save is not None:
        path = Path(save)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=80, bbox_inches="tight")
    return fig


def _grid(n: int, ncols: int, size: tuple[float, float]):
    plt = _plt()
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.axis("off")
    return fig, flat[:n]


def plot_curves(
    frame: pd.DataFrame, groups: dict[str, str] | None = None, ncols: int = 2, save: str | Path | None = None
):
    """One panel per group of logged keys (default :data:`CURVE_GROUPS`: training loss per task, validation loss
    and metrics, learning rate), one line per key against the step. Groups with no logged key are left out."""
    groups = CURVE_GROUPS if groups is None else groups
    panels = [(title, metric_curves(frame, pattern)) for title, pattern in groups.items()]
    panels = [(t, w) for t, w in panels if not w.empty and w.notna().any().any()]
    if not panels:
        raise ValueError("none of the curve groups matched a logged key (did the run log anything?)")
    fig, axes = _grid(len(panels), ncols, (5.0, 3.2))
    for ax, (title, wide) in zip(axes, panels):
        _curve_panel(ax, title, [(key, wide[key]) for key in wide.columns])
    fig.tight_layout()
    return save_figure(fig, save)


def plot_throughput(frame: pd.DataFrame, save: str | Path | None = None):
    """samples/s and tokens/s (left) and the median data-loader wait per step (right), against the step."""
    wide = throughput(frame)
    if wide.empty:
        raise ValueError("the run logged no perf/* keys (ThroughputMonitor disabled?)")
    fig, axes = _grid(2, 2, (5.0, 3.2))
    rates, wait = axes
    for key, ax in (("samples_per_s", rates), ("tokens_per_s", rates.twinx() if "tokens_per_s" in wide else None)):
        if ax is not None and key in wide:
            series = wide[key].dropna()
            ax.plot(series.index, series.values, marker="o", color="C0" if key == "samples_per_s" else "C1", label=key)
            ax.set_ylabel(key.replace("_per_s", "/s"))
    rates.set_title("throughput")
    rates.set_xlabel("step")
    for key in ("data_wait_s", "step_time_s"):
        if key in wide:
            series = wide[key].dropna()
            wait.plot(series.index, series.values, marker="o", label=key)
    wait.set_title("step time and data wait (s)")
    wait.set_xlabel("step")
    wait.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, save)


def plot_mixture(table: pd.DataFrame, save: str | Path | None = None):
    """Configured vs realised fraction of training examples per source (:func:`~.runs.mixture_table`)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.6 * max(2, len(table)) + 2, 3.2))
    xs = range(len(table))
    width = 0.38
    ax.bar([x - width / 2 for x in xs], table["configured"], width, label="configured", color="#999999")
    ax.bar([x + width / 2 for x in xs], table["realised"].fillna(0.0), width, label="realised", color="C0")
    for x, (_, row) in zip(xs, table.iterrows()):
        if not math.isnan(row["realised"]):
            ax.text(x + width / 2, row["realised"], f"{row['realised']:.2f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(xs))
    ax.set_xticklabels(list(table.index))
    ax.set_ylabel("fraction of training examples")
    ax.set_title("training mixture: configured vs realised")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, save)


def draw_box(ax, box: Any, color: str, label: str | None = None, linewidth: float = 2.0) -> bool:
    """Draw an ``[x0, y0, x1, y1]`` pixel box on ``ax``; False (nothing drawn) for a missing / NaN box."""
    from matplotlib.patches import Rectangle

    if box is None or len(box) != 4:
        return False
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError):
        return False
    if any(math.isnan(v) or math.isinf(v) for v in (x0, y0, x1, y1)):
        return False
    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=linewidth))
    if label:
        ax.text(
            x0,
            y0,
            label,
            color="white",
            fontsize=7,
            va="bottom",
            bbox={"facecolor": color, "alpha": 0.8, "pad": 1, "edgecolor": "none"},
        )
    return True


def show_image(ax, image: Any) -> None:
    import numpy as np

    ax.imshow(np.asarray(image))
    ax.set_xticks([])
    ax.set_yticks([])


def _short(value: Any, width: int = 30, lines: int = 2) -> str:
    if isinstance(value, float):
        text = f"{value:.3g}"
    elif isinstance(value, dict):  # VQA references {answer: confidence}
        text = ", ".join(f"{k} ({v:g})" for k, v in sorted(value.items(), key=lambda kv: -kv[1]))
    elif isinstance(value, (list, tuple)) and len(value) == 4 and all(isinstance(v, (int, float)) for v in value):
        text = "[" + ", ".join("nan" if math.isnan(float(v)) else f"{float(v):.0f}" for v in value) + "]"
    elif isinstance(value, (list, tuple)):
        text = " | ".join(str(v) for v in value)
    else:
        text = str(value)
    if len(text) > width * lines:
        text = textwrap.shorten(text, width=width * lines - 2, placeholder="…")
    return "\n".join(textwrap.wrap(text, width)[:lines])


def plot_gallery(predictions: dict[str, list[dict[str, Any]]], per_source: int = 4, save: str | Path | None = None):
    """Rows from :func:`~.runs.load_predictions` (with images from :func:`~.runs.attach_images`): one row of
    panels per source. Each panel: the image with the reference (green) and predicted (red) boxes for box
    tasks; under it, in the verdict's colour, ``✓``/``✗`` + the prediction, the prompt and the references."""
    picked = [(source, row) for source, rows in predictions.items() for row in rows[:per_source]]
    if not picked:
        raise ValueError("no predictions to show (did the run evaluate?)")
    sources = list(dict.fromkeys(s for s, _ in picked))
    plt = _plt()
    ncols = max(1, min(per_source, max(len(predictions[s]) for s in sources)))
    fig, axes = plt.subplots(len(sources), ncols, figsize=(3.0 * ncols, 3.6 * len(sources)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for r, source in enumerate(sources):
        for c, row in enumerate(predictions[source][:ncols]):
            ax = axes[r][c]
            image = row.get("image")
            if image is None and row.get("image_file") and Path(row["image_file"]).is_file():
                from PIL import Image

                image = Image.open(row["image_file"])  # a saved thumbnail: boxes already drawn on it
                row = {**row, "_drawn": True}
            if image is not None:
                ax.axis("on")
                show_image(ax, image)
                if not row.get("_drawn"):
                    draw_box(ax, row.get("reference"), REFERENCE_COLOR)
                    draw_box(ax, row.get("prediction"), PREDICTION_COLOR)
            mark = {True: RIGHT, False: WRONG}.get(row.get("correct"), "")
            color = {True: REFERENCE_COLOR, False: PREDICTION_COLOR}.get(row.get("correct"), "black")
            score = f" ({row['score']:.2f})" if isinstance(row.get("score"), float) else ""
            verdict = f"{mark} {_short(row.get('prediction'), 26, 2)}{score}".strip()
            caption = f"{source}: {_short(row.get('prompt') or '', 34, 2)}\nref: {_short(row.get('reference'), 34, 2)}"
            # everything about a panel under its own image (a title would sit right under the row above),
            # coloured by the verdict
            if image is not None:
                ax.set_xlabel(f"{verdict}\n{caption}", color=color, fontsize=8)
            else:
                ax.text(0.0, 0.5, f"{verdict}\n{caption}", fontsize=7, transform=ax.transAxes, va="center")
    fig.tight_layout()
    return save_figure(fig, save)


def run_styles(groups: dict[str, list[str]]) -> dict[str, dict[str, str]]:
    """``{run label: {"color", "linestyle"}}`` from ``{group: [run label, …]}`` (e.g. the seed groups of
    :func:`~.sweep.seed_groups`): one colour per group (``C0``, ``C1``, … in group order, as :func:`plot_sweep`
    colours the group's bar), one :data:`LINE_STYLES` entry per run of a group."""
    return {
        label: {"color": f"C{g % 10}", "linestyle": LINE_STYLES[k % len(LINE_STYLES)]}
        for g, labels in enumerate(groups.values())
        for k, label in enumerate(labels)
    }


def plot_runs_curves(
    frames: dict[str, pd.DataFrame],
    pattern: str = r"^train/(loss|[^/]+/loss)$",
    ncols: int = 3,
    save: str | Path | None = None,
    styles: dict[str, dict[str, str]] | None = None,
):
    """Several runs on the same axes: one panel per logged key matching ``pattern`` (default: the training loss
    and each task's; ``CURVE_GROUPS["validation metrics"]`` for the evaluation metrics), one line per run
    (``frames``: ``{label: metrics frame}``) against the step. Each run keeps its style (``styles``, from
    :func:`run_styles`; default one colour per run) in every panel."""
    curves = {label: metric_curves(frame, pattern) for label, frame in frames.items()}
    keys = sorted({k for wide in curves.values() for k in wide.columns})
    if not keys:
        raise ValueError(f"no run logged a key matching {pattern!r}")
    styles = styles or run_styles({label: [label] for label in frames})
    fig, axes = _grid(len(keys), ncols, (4.5, 3.2))
    for ax, key in zip(axes, keys):
        _curve_panel(ax, key, [(label, wide[key]) for label, wide in curves.items() if key in wide.columns], styles)
    fig.tight_layout()
    return save_figure(fig, save)


def plot_sweep(table: pd.DataFrame, columns: list[str] | None = None, ncols: int = 3, save: str | Path | None = None):
    """One bar panel per metric column of :func:`~.sweep.compare` (one bar per run) or :func:`~.sweep.summarize`
    (one bar per group of seeds: the mean, with its confidence interval as an error bar). Default: every metric
    column but ``wall_seconds``. Bars are coloured ``C0``, ``C1``, … in row order; a row that did not evaluate a
    metric is marked ``n/a``."""
    if columns is None:
        columns = [
            c
            for c in table.columns
            if c not in ("mixture", "run_dir", "run_dirs", "wall_seconds", "seeds")
            and " ±" not in c
            and not c.endswith(" n")
            and pd.api.types.is_numeric_dtype(table[c])
        ]
    if not columns:
        raise ValueError("no metric columns to plot")
    fig, axes = _grid(len(columns), ncols, (max(3.5, 1.1 * len(table) + 1.5), 3.4))
    labels = [textwrap.fill(str(i), 18) for i in table.index]
    for ax, column in zip(axes, columns):
        values = table[column].astype(float)
        xs = list(range(len(values)))
        spread = next((table[c].astype(float) for c in table.columns if c.startswith(f"{column} ±")), None)
        ax.bar(
            xs,
            values.fillna(0.0),
            color=[f"C{i % 10}" for i in xs],
            yerr=None if spread is None else spread.fillna(0.0),
            capsize=4,
        )
        for x, v in zip(xs, values):
            ax.text(
                x,
                0 if math.isnan(v) else v,
                "n/a" if math.isnan(v) else f"{v:.3g}",
                ha="center",
                va="bottom",
                fontsize=8,
            )
        ax.set_xticks(xs)
        ax.set_xticklabels(labels, fontsize=7, rotation=20, ha="right")
        ax.set_title(column)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, save)


def _curve_panel(
    ax, title: str, lines: list[tuple[str, pd.Series]], styles: dict[str, dict[str, str]] | None = None
) -> None:
    """One panel of step curves: each ``(label, series)`` without its gaps, markers when there are few points."""
    for label, series in lines:
        series = series.dropna()
        ax.plot(
            series.index,
            series.values,
            marker="o" if len(series) < 10 else None,
            label=label,
            **(styles or {}).get(label, {}),
        )
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
