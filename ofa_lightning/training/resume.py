"""``resume=``: continue a run from its checkpoint with the run's own config, and leave its record intact.

``resume=auto`` continues the newest good checkpoint of ``<run dir>/checkpoints/``: newest by the global step it
holds (never by file name or time: a run dir that was moved or copied may hold a stale ``last.ckpt`` beside a newer
file), good when its checksum (or zip CRCs) verify and it loads; a damaged newer one is named in a warning saying
which one is used instead. ``resume=<path>`` continues that checkpoint (into this job's run dir), verified the same
way. What happens, in order, before anything in the run dir is written:

1. The run's config is rebuilt from the checkpoint's model card (``model_card.py``; older checkpoints: the run
   dir's ``config_resolved.yaml``), and only the overrides given now are applied to it (Hydra's override list of
   this job): ``key=value`` takes the new value; a config group given again with the run's own choice
   (``experiment=demo`` for a demo run) changes nothing, another choice replaces that group's section
   (``trainer=gpu``); another choice of a global group (``experiment``, ``debug``) is refused, as a resumed run
   keeps its experiment. ``paths.output_dir`` is this job's run dir. Called as ``train(cfg)`` without Hydra (no
   override list), the config given is used as it is.
2. An override that changes the shape of a trained tensor is refused in one line naming each changed key, e.g.
   ``model.encoder_layers: trained 1, given 4`` (``tokenizer.*`` settings too: they change the vocabulary).
3. Nothing in the run dir is written until the checkpoint has loaded: ``config_resolved.yaml`` (and the tokenizer
   when the run dir has none) are written by :class:`PublishRunRecord` when training starts, after Lightning
   restored the checkpoint; Hydra's own ``.hydra/`` of a ``resume`` job is first written to a temporary folder
   (:class:`DeferRunRecord`, a Hydra callback in ``conf/hydra/default.yaml``) and moved into the run dir then.

``resume=auto`` with no checkpoint yet: when the run dir is new (nothing but this job's log), or holds this very
run stopped before its first checkpoint (its ``config_resolved.yaml`` equals this config), one line on the console
says so and the run starts at step 0, so one command both starts and restarts a preemptible job. When the run dir
holds another run's files, it is refused in one line: ``resume=auto`` never starts a fresh run over another run's
record.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from ofa_lightning.errors import UserError
from ofa_lightning.paths import DEFERRED_RECORD_PREFIX

try:  # hydra is a dependency; the callback base only matters inside a Hydra app
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover
    _HydraCallback = object

import pytorch_lightning as pl

log = logging.getLogger(__name__)

__all__ = [
    "ResumePlan",
    "prepare_resume",
    "PublishRunRecord",
    "DeferRunRecord",
    "publish_run_record",
    "discard_deferred_hydra_dir",
    "hydra_overrides",
]

HYDRA_TMP_PREFIX = DEFERRED_RECORD_PREFIX
# tokenizer settings that do not change the vocabulary
_TOKENIZER_FREE = {"path", "max_samples"}


class DeferRunRecord(_HydraCallback):
    """Hydra callback: a job with ``resume`` set writes Hydra's ``.hydra/`` into a temporary folder (an absolute
    ``hydra.output_subdir``); :func:`publish_run_record` moves it into the run dir once the checkpoint has loaded.
    A multirun rebuilds each job's config from the command line, so there the folder is passed on as a Hydra
    override, one folder per job output dir (``ofa.deferred_record_dir``, ofa_lightning/paths.py)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not OmegaConf.select(config, "resume", default=None) or config.hydra.get("output_subdir") is None:
            return
        from omegaconf import read_write

        with read_write(config.hydra), open_dict(config.hydra):
            config.hydra.overrides.hydra.append(
                "hydra.output_subdir='${ofa.deferred_record_dir:${hydra.runtime.output_dir}}'"
            )

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not OmegaConf.select(config, "resume", default=None) or config.hydra.get("output_subdir") is None:
            return
        from omegaconf import read_write

        with read_write(config.hydra), open_dict(config.hydra):
            config.hydra.output_subdir = tempfile.mkdtemp(prefix=HYDRA_TMP_PREFIX)


@dataclass
class ResumePlan:
    cfg: DictConfig
    ckpt_path: str | None = None
    tokenizer: Any = None  # the run's tokenizer from the checkpoint's model card (None: build or load as usual)
    choices: dict[str, str] | None = None  # the run's config group choices (kept in the model card)
    step: int | None = None  # the global step of the checkpoint it continues from


def hydra_overrides() -> tuple[list[str], dict[str, str]] | None:
    """(this job's overrides, its config group choices), or None outside a Hydra app."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return None
        hc = HydraConfig.get()
        return list(hc.overrides.task), {str(k): str(v) for k, v in hc.runtime.choices.items() if v is not None}
    except (ImportError, ValueError):
        return None


def _checkpoint_files(folder: Path) -> list[Path]:
    """The checkpoints in ``folder`` (not the temporary files of an interrupted write)."""
    if not folder.is_dir():
        return []
    return [p for p in folder.glob("*.ckpt") if p.is_file() and not p.name.startswith(".")]


def _checkpoint_path(cfg: DictConfig, run_dir: Path) -> Path | None:
    if cfg.resume == "auto":
        folder = run_dir / "checkpoints"
        if _checkpoint_files(folder):
            return folder
        # this job's own files (Hydra's log and record, the tokenizer another rank of it may have saved already)
        own = {".hydra", "tokenizer", f"{cfg.get('task_name', 'train')}.log"}
        other = (
            sorted(p.name for p in run_dir.iterdir() if p.name not in own and p.suffix != ".log")
            if run_dir.is_dir()
            else []
        )
        if other and _launch_rank() == 0 and not _same_run(cfg, run_dir):  # other ranks: rank 0's record
            raise UserError(
                f"resume=auto: no checkpoint at {folder / 'last.ckpt'}, but {run_dir} holds another run's files "
                f"({', '.join(other[:4])}); pass resume=<a .ckpt>, another run_name, or remove the folder"
            )
        message = f"resume=auto: {run_dir} has no checkpoint yet: starting at step 0"
        log.warning(message)
        if _launch_rank() == 0:  # said on the console too, whatever the logging set-up
            print(message, file=sys.stderr, flush=True)
        return None
    path = Path(str(cfg.resume))
    if not path.is_file():
        raise FileNotFoundError(f"resume={cfg.resume!r}: no checkpoint there (use resume=auto or a .ckpt path)")
    return path


def _read(path: Path, what: str) -> dict[str, Any]:
    import torch

    from ofa_lightning.weights.integrity import verify_checkpoint

    verify_checkpoint(path)  # DamagedCheckpointError (a UserError) naming the file and the damaged member
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - truncated, damaged, or not a checkpoint: said in one line
        raise UserError(
            f"{what}: cannot read the checkpoint {path} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})"
        ) from exc
    if not isinstance(data, dict) or "state_dict" not in data:
        raise UserError(f"{what}: {path} is not a training checkpoint (no state_dict)")
    return data


def newest_first(folder: Path) -> list[tuple[int | None, Path]]:
    """The checkpoints of ``folder`` newest first by the global step they hold (their sidecar's, else read from the
    file; unreadable ones last), never by name or modification time; ``last.ckpt`` first among equal steps."""
    from ofa_lightning.training.checkpointing import saved_step

    steps = [(saved_step(p), p) for p in _checkpoint_files(folder)]
    return sorted(steps, key=lambda sp: (-1 if sp[0] is None else sp[0], sp[1].name == "last.ckpt"), reverse=True)


def _newest_good(folder: Path) -> tuple[Path, dict[str, Any]]:
    """The newest checkpoint of ``folder`` (by global step) that verifies and loads; a damaged newer one is named
    in a warning saying which one is used instead."""
    problems = []
    for step, path in newest_first(folder):
        try:
            data = _read(path, "resume=auto")
        except UserError as exc:
            problems.append(str(exc))
            log.warning("%s; trying the next newest checkpoint", exc)
            continue
        if problems:
            message = f"resume=auto: continuing from {path} (step {step}) instead ({problems[0]})"
            log.warning(message)
            if _launch_rank() == 0:
                print(message, file=sys.stderr, flush=True)
        else:
            log.info("resume=auto: continuing from %s (step %s)", path, step)
        return path, data
    raise UserError(
        f"{problems[0]}; no other readable checkpoint in {folder}"
        if problems
        else f"resume=auto: no checkpoint in {folder}"
    )


def _same_run(cfg: DictConfig, run_dir: Path) -> bool:
    """The run dir's ``config_resolved.yaml`` is this config: the same run, stopped before its first checkpoint."""
    saved = run_dir / "config_resolved.yaml"
    if not saved.is_file():
        return False
    try:
        before = OmegaConf.to_container(OmegaConf.load(saved), resolve=True)
        now = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # noqa: BLE001 - an unreadable record is not this run's
        return False
    for config in (before, now):
        config.pop("resume", None)
    return before == now


def _launch_rank() -> int:
    """This process' rank as its launcher set it (torchrun, srun, Lightning's DDP children); 0 when alone."""
    for name in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def prepare_resume(
    cfg: DictConfig, run_dir: Path, overrides: tuple[list[str], dict[str, str]] | None = None
) -> ResumePlan:
    """The config and checkpoint a run continues from (see the module doc); writes nothing."""
    overrides = overrides if overrides is not None else hydra_overrides()
    choices = overrides[1] if overrides is not None else None
    if not cfg.get("resume"):
        return ResumePlan(cfg, choices=choices)
    path = _checkpoint_path(cfg, Path(run_dir))
    if path is None:
        return ResumePlan(cfg, choices=choices)
    from .model_card import read_model_card

    path, data = _newest_good(path) if cfg.resume == "auto" else (path, _read(path, f"resume={cfg.resume}"))
    card = read_model_card(data, path)
    merged, saved_choices = cfg, (data.get(_CARD) or {}).get("choices")
    if card.config is not None and overrides is not None:
        merged, applied = rebuild_config(cfg, card.config, overrides[0], overrides[1], saved_choices)
        choices = {**(saved_choices or choices or {}), **applied}
    tokenizer = card.tokenizer()
    check_shapes(data, merged, card.config, tokenizer, path)
    return ResumePlan(merged, str(path), tokenizer, choices, int(data.get("global_step") or 0))


_CARD = "ofa_model_card"


def rebuild_config(
    now: DictConfig,
    saved: dict[str, Any],
    overrides: list[str],
    choices: dict[str, str],
    saved_choices: dict[str, str] | None,
) -> tuple[DictConfig, dict[str, str]]:
    """``saved`` with the overrides given now applied (values taken from ``now``, the config Hydra composed), and
    the config group choices that changed."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    merged = OmegaConf.create(saved)
    applied: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        if key == "hydra" or key.startswith(("hydra.", "hydra/")):
            continue
        if key in choices:  # a config group
            if saved_choices and saved_choices.get(key) == choices[key]:
                continue
            section = OmegaConf.select(now, key.replace("/", "."), default=None)
            if isinstance(section, DictConfig):
                OmegaConf.update(
                    merged,
                    key.replace("/", "."),
                    OmegaConf.to_container(section, resolve=True),
                    merge=False,
                    force_add=True,
                )
                applied[key] = choices[key]
            elif saved_choices:
                raise UserError(
                    f"resume: {key}={choices[key]} is not the run's {key}={saved_choices.get(key)}; a "
                    f"resumed run keeps its {key} (start a new run_name for another)"
                )
            else:
                log.warning(
                    "resume: %s=%s is taken as the run's own (its checkpoint does not record it)", key, choices[key]
                )
        elif override.is_delete():
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(merged, parent) if parent else merged
            if isinstance(node, DictConfig) and leaf in node:
                with open_dict(node):
                    del node[leaf]
        else:
            _take(merged, now, key)
            # keys defined by reference to it follow (module.optim.max_steps: ${trainer.max_steps})
            for dependent in _references(OmegaConf.to_container(now, resolve=False), key):
                _take(merged, now, dependent)
    with open_dict(merged):
        merged.paths.output_dir = str(now.paths.output_dir)  # this job's run dir
    return merged, applied


def _take(merged: DictConfig, now: DictConfig, key: str) -> None:
    value = OmegaConf.select(now, key, default=None)
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    OmegaConf.update(merged, key, value, merge=False, force_add=True)


def _references(node: Any, key: str, prefix: str = "") -> list[str]:
    """Dotted keys of ``node`` (an unresolved container) whose value interpolates ``key``."""
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            out.extend(_references(v, key, f"{prefix}{k}."))
    elif isinstance(node, str) and ("${" + key + "}" in node or "${" + key + "." in node):
        out.append(prefix[:-1])
    return out


def _leaf_diffs(trained: Any, given: Any, prefix: str) -> list[str]:
    if isinstance(trained, dict) and isinstance(given, dict):
        out = []
        for key in sorted(set(trained) | set(given), key=str):
            out.extend(_leaf_diffs(trained.get(key), given.get(key), f"{prefix}.{key}"))
        return out
    return [] if trained == given else [f"{prefix}: trained {trained}, given {given}"]


def _shapes(model_config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    import torch

    from ofa_lightning.model import OFAConfig, OFAModel

    with torch.device("meta"):
        model = OFAModel(OFAConfig.from_saved(model_config))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_shapes(
    data: dict[str, Any], cfg: DictConfig, saved: dict[str, Any] | None, tokenizer: Any, path: Path
) -> None:
    """Refuse (one line) a config whose model would not take the checkpoint's tensors."""
    from ofa_lightning.model import OFAConfig

    trained = dict(data.get("hyper_parameters", {}).get("model_config") or {})
    if not trained:
        return
    diffs = []
    if saved is not None:  # tokenizer settings change the vocabulary (the run's saved tokenizer is reused)
        free = {f"tokenizer.{k}" for k in _TOKENIZER_FREE}
        diffs = [
            d
            for d in _leaf_diffs(
                saved.get("tokenizer"), OmegaConf.to_container(cfg.tokenizer, resolve=True), "tokenizer"
            )
            if d.split(":")[0] not in free
        ]
    from ofa_lightning.speed.config import split_model_node

    model = split_model_node(OmegaConf.to_container(cfg.model, resolve=True))[0]  # speed options change no tensor
    if model.get("vocab_size") is None:
        model["vocab_size"] = tokenizer.vocab_size if tokenizer is not None else trained.get("vocab_size")
    given = OFAConfig.from_dict(model).to_dict()
    if _shapes(trained) != _shapes(given):
        diffs += [f"model.{k}: trained {trained.get(k)}, given {v}" for k, v in given.items() if trained.get(k) != v]
    if diffs:
        raise UserError(
            f"resume from {path}: {'; '.join(diffs)} would not fit the trained weights; resume with the "
            "run's values, or start a new run (module.init_from=<checkpoint> to start from its weights)"
        )


def _deferred_hydra_dir() -> Path | None:
    try:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return None
        sub = HydraConfig.get().get("output_subdir")
    except (ImportError, ValueError):
        return None
    if sub and Path(sub).is_absolute() and Path(sub).name.startswith(HYDRA_TMP_PREFIX) and Path(sub).is_dir():
        return Path(sub)
    return None


def discard_deferred_hydra_dir() -> None:
    """Remove this job's temporary ``.hydra`` (a job that did not start, or a rank other than 0)."""
    tmp = _deferred_hydra_dir()
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)


def publish_run_record(cfg: DictConfig, run_dir: Path, tokenizer: Any = None) -> None:
    """Write the run's record into its dir: ``config_resolved.yaml``, the tokenizer when the dir has none, and
    Hydra's ``.hydra/`` of a resume job (moved from its temporary folder). Rank 0 only."""
    if int(os.environ.get("RANK", 0)) != 0:
        discard_deferred_hydra_dir()
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run_dir / "config_resolved.yaml", resolve=True)
    if (
        tokenizer is not None
        and hasattr(tokenizer, "save")
        and not (run_dir / "tokenizer" / "ofa_tokenizer.json").exists()
    ):
        tokenizer.save(run_dir / "tokenizer")
    tmp = _deferred_hydra_dir()
    if tmp is not None:
        dest = run_dir / ".hydra"
        dest.mkdir(exist_ok=True)
        for item in tmp.iterdir():
            shutil.move(str(item), str(dest / item.name))
        shutil.rmtree(tmp, ignore_errors=True)


class PublishRunRecord(pl.Callback):
    """Writes the run record (:func:`publish_run_record`) when training starts: after Lightning restored the
    checkpoint (weights, optimiser, loops)."""

    def __init__(self, cfg: DictConfig, run_dir: Path, tokenizer: Any = None):
        self.cfg, self.run_dir, self.tokenizer = cfg, Path(run_dir), tokenizer
        self.done = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.done:
            publish_run_record(self.cfg, self.run_dir, self.tokenizer)
            self.done = True
