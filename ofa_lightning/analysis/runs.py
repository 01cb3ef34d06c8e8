"""One run dir -> its config, metrics, throughput, realised mixture and predictions (for notebooks and reports).

A run dir is what ``ofa-train`` writes (``ofa_lightning.training.run.train``): ``config_resolved.yaml``,
``final_metrics.json``, ``metrics.csv`` / ``metrics.jsonl`` (every logged scalar, ``MetricsFileLogger``),
``predictions/*.jsonl``, ``checkpoints/``, ``tokenizer/`` and, with W&B on, ``wandb/`` + ``wandb_id``.

Prediction files come in two flavours, both read here:

* ``<stage>_<source>_step<N>.jsonl`` (``OFALitModule``): every evaluated record ``{id, task, tokens, prediction,
  reference}``;
* ``<stage>-step<N>-<source>.jsonl`` (``PredictionTables``): the first rows with ``prompt``, ``references``,
  ``score`` (and ``image`` when saved).

:func:`load_predictions` merges them by id, scores every row (``score``: VQA soft score, box IoU or exact match) and
marks it right or wrong (``correct``: score >= 0.5, i.e. Acc@0.5 for boxes; None for captions, which only have
corpus metrics). :func:`attach_images` finds each row's image in the run's evaluation shards.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "Run",
    "load_run",
    "is_run_dir",
    "latest_run",
    "read_metrics",
    "metric_curves",
    "metric_keys",
    "throughput",
    "throughput_summary",
    "mixture_table",
    "configured_mixture",
    "prediction_files",
    "load_predictions",
    "judge",
    "attach_images",
    "eval_shards",
    "wandb_run",
    "CORRECT_THRESHOLD",
]

CONFIG_FILE = "config_resolved.yaml"
FINAL_FILE = "final_metrics.json"
CORRECT_THRESHOLD = 0.5  # a row is "right" when its score (VQA soft score, box IoU, exact match) reaches this

_MODULE_FILE = re.compile(r"^(?P<stage>val|test)_(?P<source>.+)_step(?P<step>\d+)\.jsonl$")
_TABLE_FILE = re.compile(r"^(?P<stage>val|test)-step(?P<step>\d+)-(?P<source>.+)\.jsonl$")


@dataclass
class Run:
    """A loaded run dir. ``config`` is the resolved config as plain dicts; ``final`` is ``final_metrics.json``."""

    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    final: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.config.get("run_name") or self.path.name)

    @property
    def checkpoint(self) -> Path | None:
        last = self.path / "checkpoints" / "last.ckpt"
        if last.is_file():
            return last
        found = sorted((self.path / "checkpoints").glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
        return found[-1] if found else None

    @property
    def tokenizer_dir(self) -> Path | None:
        tdir = self.path / "tokenizer"
        return tdir if (tdir / "ofa_tokenizer.json").is_file() else None

    def metrics(self) -> pd.DataFrame:
        return read_metrics(self.path)

    def config_yaml(self) -> str:
        """The resolved config as YAML text (what the notebook prints)."""
        path = self.path / CONFIG_FILE
        return path.read_text(encoding="utf-8") if path.is_file() else ""


def is_run_dir(path: str | Path) -> bool:
    path = Path(path)
    return (path / CONFIG_FILE).is_file() or (path / FINAL_FILE).is_file()


def load_run(run_dir: str | Path) -> Run:
    """Read ``config_resolved.yaml`` and ``final_metrics.json`` (either may be missing, not both)."""
    from omegaconf import OmegaConf

    path = Path(run_dir).expanduser().resolve()
    if not is_run_dir(path):
        raise FileNotFoundError(f"{path} is not a run dir: it has neither {CONFIG_FILE} nor {FINAL_FILE}")
    config: dict[str, Any] = {}
    if (path / CONFIG_FILE).is_file():
        loaded = OmegaConf.to_container(OmegaConf.load(path / CONFIG_FILE), resolve=False)
        config = loaded if isinstance(loaded, dict) else {}
    final: dict[str, float] = {}
    if (path / FINAL_FILE).is_file():
        final = json.loads((path / FINAL_FILE).read_text(encoding="utf-8"))
    return Run(path=path, config=config, final=final)


def latest_run(root: str | Path | None = None) -> Path:
    """The most recently finished (else started) run dir under ``root`` (default: ``runs/`` in the working
    directory, where ``ofa-train`` writes)."""
    root = Path(root) if root is not None else Path.cwd() / "runs"
    found = [p.parent for name in (FINAL_FILE, CONFIG_FILE) for p in root.rglob(name)] if root.is_dir() else []
    found = [p for p in found if "wandb" not in p.parts]
    if not found:
        raise FileNotFoundError(f"no run dir under {root}: train one (make demo, ofa-train …) or point at one")

    def stamp(p: Path) -> float:
        return max((p / n).stat().st_mtime for n in (FINAL_FILE, CONFIG_FILE) if (p / n).is_file())

    return max(set(found), key=stamp)


# ------------------------------------------------------------------------------------------------ metrics
def read_metrics(run_dir: str | Path) -> pd.DataFrame:
    """Every logged scalar as a long frame ``step, key, value, time`` (from ``metrics.csv``, else
    ``metrics.jsonl``). Empty frame (same columns) when the run logged nothing."""
    run_dir = Path(run_dir)
    columns = ["step", "key", "value", "time"]
    csv_path, jsonl_path = run_dir / "metrics.csv", run_dir / "metrics.jsonl"
    if csv_path.is_file() and csv_path.stat().st_size:
        from ofa_lightning.training.tracking import read_metrics_csv

        frame = pd.DataFrame(read_metrics_csv(csv_path), columns=columns)
    elif jsonl_path.is_file():
        from ofa_lightning.training.tracking import read_metrics_jsonl

        rows = []
        for record in read_metrics_jsonl(jsonl_path):
            step, when = record.pop("step", None), record.pop("time", None)
            rows.extend(
                {"step": step, "key": k, "value": float(v), "time": when}
                for k, v in record.items()
                if isinstance(v, (int, float))
            )
        frame = pd.DataFrame(rows, columns=columns)
    else:
        return pd.DataFrame(columns=columns)
    frame["step"] = pd.to_numeric(frame["step"], errors="coerce").astype("Int64")
    frame["value"] = frame["value"].astype(float)
    return frame


def metric_keys(frame: pd.DataFrame, pattern: str) -> list[str]:
    """Logged keys matching a regular expression (``re.search``), sorted."""
    return sorted(k for k in frame["key"].unique() if re.search(pattern, str(k)))


def metric_curves(frame: pd.DataFrame, keys: list[str] | str) -> pd.DataFrame:
    """A wide frame indexed by step, one column per key (a regex string selects keys); the last value of a key
    logged twice at one step wins."""
    if isinstance(keys, str):
        keys = metric_keys(frame, keys)
    sub = frame[frame["key"].isin(keys) & frame["step"].notna()]
    if sub.empty:
        return pd.DataFrame(columns=list(keys))
    wide = sub.pivot_table(index="step", columns="key", values="value", aggfunc="last").sort_index()
    wide.index = wide.index.astype(int)
    return wide.reindex(columns=[k for k in keys if k in wide.columns])


def throughput(frame: pd.DataFrame) -> pd.DataFrame:
    """``perf/*`` keys by step (samples/s, tokens/s, step time, data wait, MFU…), columns without the prefix."""
    wide = metric_curves(frame, r"^perf/")
    return wide.rename(columns=lambda k: k[len("perf/") :])


def throughput_summary(frame: pd.DataFrame) -> dict[str, float]:
    """Median of each ``perf/*`` key over the run (what the notebook reports as the run's speed)."""
    wide = throughput(frame)
    return {k: float(wide[k].median()) for k in wide.columns if wide[k].notna().any()}


# ------------------------------------------------------------------------------------------------ mixture
def configured_mixture(config: dict[str, Any]) -> dict[str, float]:
    """The mixture's sampling ratios, normalised to fractions (``{}`` for a config without a mixture)."""
    from ofa_lightning.data.mixture import parse_mixture

    mixture = config.get("mixture") or (config.get("data") or {}).get("mixture")
    if not mixture:
        return {}
    sources = parse_mixture(mixture)
    total = sum(s.ratio for s in sources)
    return {s.name: s.ratio / total for s in sources}


def mixture_table(run: Run, frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """Configured vs realised training mixture per source: ``configured``, ``realised`` (the fraction of training
    examples drawn from it, from the last ``data/train/mix_count/<source>``; ``data/train/mix/<source>`` when
    counts are missing), ``examples`` (that count) and ``delta = realised - configured``."""
    frame = run.metrics() if frame is None else frame
    configured = configured_mixture(run.config)
    counts = _last_values(frame, "data/train/mix_count/")
    realised = {}
    if counts and sum(counts.values()) > 0:
        total = sum(counts.values())
        realised = {k: v / total for k, v in counts.items()}
    else:
        realised = _last_values(frame, "data/train/mix/")
    names = list(configured) + [n for n in realised if n not in configured]
    table = pd.DataFrame(
        {
            "configured": [configured.get(n, 0.0) for n in names],
            "realised": [realised.get(n, math.nan) for n in names],
            "examples": [counts.get(n, math.nan) for n in names],
        },
        index=pd.Index(names, name="source"),
    )
    table["delta"] = table["realised"] - table["configured"]
    return table


def _last_values(frame: pd.DataFrame, prefix: str) -> dict[str, float]:
    sub = frame[frame["key"].astype(str).str.startswith(prefix)]
    if sub.empty:
        return {}
    sub = sub.assign(_order=range(len(sub))).sort_values(["step", "_order"], na_position="first")
    last = sub.groupby("key")["value"].last()
    return {k[len(prefix) :]: float(v) for k, v in last.items()}


# ------------------------------------------------------------------------------------------------ predictions
def prediction_files(run_dir: str | Path) -> pd.DataFrame:
    """Every prediction JSONL of the run: ``stage, step, source, kind`` (``records`` | ``table``), ``path``."""
    rows = []
    for path in sorted((Path(run_dir) / "predictions").glob("*.jsonl")):
        for kind, pattern in (("records", _MODULE_FILE), ("table", _TABLE_FILE)):
            m = pattern.match(path.name)
            if m:
                rows.append(
                    {"stage": m["stage"], "step": int(m["step"]), "source": m["source"], "kind": kind, "path": path}
                )
                break
    return pd.DataFrame(rows, columns=["stage", "step", "source", "kind", "path"])


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def judge(prediction: Any, reference: Any, task: str | None = None) -> tuple[float | None, bool | None]:
    """(score, right?) of one prediction: VQA soft score, box IoU, exact match; (None, None) for a list of reference
    texts (captions: the corpus metrics judge them)."""
    from ofa_lightning.tasks.scoring import row_score

    if isinstance(reference, list) and reference and all(isinstance(r, str) for r in reference):
        return None, None
    score = row_score(prediction, reference)
    if score is None or (isinstance(score, float) and math.isnan(score)):
        return None, None
    return float(score), bool(score >= CORRECT_THRESHOLD)


def load_predictions(
    run_dir: str | Path, stage: str = "test", step: int | None = None, sources: list[str] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """``{source: rows}`` of one evaluation (``stage``; the latest ``step`` by default). Each row: ``id, task,
    prompt, prediction, reference, score, correct`` (+ ``image_file`` when the run saved thumbnails)."""
    files = prediction_files(run_dir)
    files = files[files["stage"] == stage]
    if files.empty:
        return {}
    step = int(files["step"].max()) if step is None else int(step)
    files = files[files["step"] == step]
    out: dict[str, list[dict[str, Any]]] = {}
    for source in sorted(files["source"].unique()):
        if sources is not None and source not in sources:
            continue
        mine = files[files["source"] == source]
        rows: dict[str, dict[str, Any]] = {}
        for path in mine[mine["kind"] == "records"]["path"]:
            for r in _read_jsonl(path):
                rows[str(r["id"])] = {
                    "id": str(r["id"]),
                    "task": r.get("task"),
                    "prompt": None,
                    "prediction": r.get("prediction"),
                    "reference": r.get("reference"),
                }
        for path in mine[mine["kind"] == "table"]["path"]:
            for r in _read_jsonl(path):
                row = rows.setdefault(
                    str(r["id"]),
                    {
                        "id": str(r["id"]),
                        "task": r.get("task"),
                        "prediction": r.get("prediction"),
                        "reference": r.get("references"),
                    },
                )
                row["prompt"] = r.get("prompt")
                if r.get("image"):
                    row["image_file"] = str(Path(run_dir) / "predictions" / r["image"])
        for row in rows.values():
            row.setdefault("prompt", None)
            row["score"], row["correct"] = judge(row["prediction"], row["reference"], row.get("task"))
        # rows with a prompt first (the ones the callback kept context for), then the rest in file order
        out[source] = sorted(rows.values(), key=lambda r: r["prompt"] is None)
    return out


def eval_shards(run: Run, source: str, stage: str = "test") -> list[str]:
    """The shard URLs the run evaluated ``source`` on (``[]`` when the config does not say or names no split)."""
    from ofa_lightning.data.mixture import parse_mixture
    from ofa_lightning.data.shards import resolve_shards

    data = run.config.get("data") or {}
    mixture = run.config.get("mixture") or data.get("mixture") or {}
    eval_cfg = data.get("eval") or {}
    default = eval_cfg.get("split", "val") if stage == "val" else eval_cfg.get("test_split", "test")
    for entry in parse_mixture(mixture):
        if entry.name != source:
            continue
        split = entry.resolved_eval_split(default, stage)
        if not split:
            return []
        spec = entry.eval_spec
        specs = spec if isinstance(spec, (list, tuple)) else [spec]
        root = data.get("shards_root")
        rooted = [
            str(Path(root) / s)
            if root and not (Path(str(s)).is_absolute() or "://" in str(s) or str(s).startswith("pipe:"))
            else str(s)
            for s in specs
        ]
        try:
            return resolve_shards(rooted, split)
        except Exception:  # moved or deleted shards: the gallery shows text only
            return []
    return []


def attach_images(
    run: Run, predictions: dict[str, list[dict[str, Any]]], stage: str = "test", limit: int | None = 16
) -> dict[str, list[dict[str, Any]]]:
    """Add ``image`` (a PIL image, original pixels: the frame the boxes are in) to the first ``limit`` rows of
    each source, read from the run's evaluation shards by sample id; rows without a found image keep none."""
    from ofa_lightning.data.samples import decode_sample
    from ofa_lightning.data.shards import iter_tar_samples

    for source, rows in predictions.items():
        wanted = {r["id"]: r for r in (rows if limit is None else rows[:limit])}
        for url in eval_shards(run, source, stage):
            if not wanted:
                break
            for raw in iter_tar_samples(url):
                decoded = decode_sample(raw)
                if not isinstance(decoded, tuple):
                    continue
                fields, image = decoded
                row = wanted.pop(str(fields.get("id")), None)
                if row is not None and image is not None:
                    row["image"] = image
                if not wanted:
                    break
    return predictions


# ------------------------------------------------------------------------------------------------ W&B
def wandb_run(run_dir: str | Path, online: bool | None = None) -> dict[str, Any]:
    """The run's W&B record: offline, what :func:`~ofa_lightning.training.tracking.read_offline_run` reads from the
    run dir and its ``wandb/`` folders (``keys``, ``values``, ``summary``, ``tables``…, plus ``source="offline"``);
    online
    (``online=True``, or None with credentials and a run logged online), ``wandb.Api().run`` (``source="online"``,
    ``url``, ``summary``, ``history`` as a DataFrame). Raises ``FileNotFoundError`` when the run has no W&B run."""
    from ofa_lightning.training.tracking import has_wandb_credentials, read_offline_run, read_run_id

    run_dir = Path(run_dir)
    run_id = read_run_id(run_dir)
    offline_folders = list((run_dir / "wandb").glob("offline-run-*")) if (run_dir / "wandb").is_dir() else []
    if online is None:
        online = bool(run_id) and not offline_folders and has_wandb_credentials()
    if online:
        import wandb

        if not run_id:
            raise FileNotFoundError(f"{run_dir} has no wandb_id")
        logger = (load_run(run_dir).config.get("logger") or {}) if is_run_dir(run_dir) else {}
        path = "/".join(p for p in (logger.get("entity"), logger.get("project"), run_id) if p)
        api_run = wandb.Api().run(path)
        return {
            "source": "online",
            "run_id": run_id,
            "url": api_run.url,
            "summary": dict(api_run.summary),
            "config": dict(api_run.config),
            "history": api_run.history(pandas=True),
        }
    result = read_offline_run(run_dir)
    result["source"] = "offline"
    return result
