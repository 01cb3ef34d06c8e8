"""The model card: what a checkpoint needs to be used anywhere, stored inside the checkpoint.

``OFALitModule.on_save_checkpoint`` writes it under ``checkpoint["ofa_model_card"]`` (plain containers, strings and
numbers only, so ``torch.load(weights_only=True)`` reads it)::

    format      1
    config      the run's resolved Hydra config (what ``config_resolved.yaml`` holds), or None
    choices     the run's Hydra config group choices (``model: tiny``, ``experiment: demo`` ...), or None
    tokenizer   {file name: text} of the saved tokenizer (``vocab.json``, ``merges.txt``, ``ofa_tokenizer.json``)
    tasks       {source name: {"task": task name, "options": the task's options}}: each task as training built it
                (image size, bins' ``max_image_size``, ``prompt_type``, the closed answer set as a list instead of a
                file path, ``generation`` overrides)
    decoding    {source name: the task's GenerationConfig as a dict} (what evaluation decodes with; informative)
    num_bins    location bins of the tokenizer

``read_model_card(path)`` returns a :class:`ModelCard` from the checkpoint, or, for checkpoints written before the
card existed, from the run dir beside it (``config_resolved.yaml`` and ``tokenizer/``). ``ofa-predict``,
``ofa-eval``, ``OFA.load`` and ``resume=auto`` read it from there, so a lone ``.ckpt`` copied elsewhere still
predicts the way its run evaluated.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = [
    "CARD_KEY",
    "ModelCard",
    "build_model_card",
    "module_card",
    "read_model_card",
    "tasks_from_config",
    "run_dir_of",
]

CARD_KEY = "ofa_model_card"
CARD_FORMAT = 1
TOKENIZER_FILES = ("vocab.json", "merges.txt", "vocab.txt", "dict.txt", "ofa_tokenizer.json")  # BPE or WordPiece


def _plain(value: Any) -> Any:
    """Containers, strings, numbers, bools and None only (``weights_only`` loads); anything else as its str."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            return _plain(OmegaConf.to_container(value, resolve=True))
    except ImportError:  # pragma: no cover
        pass
    return str(value)


def tokenizer_files(tokenizer) -> dict[str, str]:
    """The text of the files ``OFATokenizer.save`` writes."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save(tmp)
        files = [Path(tmp) / name for name in TOKENIZER_FILES]
        return {p.name: p.read_text(encoding="utf-8") for p in files if p.exists()}


def tokenizer_from_files(files: Mapping[str, str]):
    from ofa_lightning.tokenizer import OFATokenizer

    with tempfile.TemporaryDirectory() as tmp:
        for name, text in files.items():
            if name in TOKENIZER_FILES:
                (Path(tmp) / name).write_text(text, encoding="utf-8")
        return OFATokenizer.load(tmp)


def task_entry(task) -> dict[str, Any]:
    """``{"task", "options"}`` of a built task; a closed candidate set is stored as its list."""
    options = dict(task.options)
    if getattr(task, "candidates", None) is not None and "candidates" in options:
        options["candidates"] = list(task.candidates)
    return {"task": type(task).name, "options": _plain(options)}


def build_model_card(
    tokenizer, tasks: Mapping[str, Any], config: Any = None, choices: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The card of a model trained with ``tokenizer`` on ``tasks`` ({source name: Task}) under ``config`` (Hydra's
    config group ``choices`` beside it, for ``resume``)."""
    decoding = {}
    for name, task in tasks.items():
        try:
            decoding[str(name)] = _plain(task.generation_config().to_dict())
        except (NotImplementedError, AttributeError):  # a task without beam search settings
            continue
    return {
        "format": CARD_FORMAT,
        "config": _plain(config) if config is not None else None,
        "choices": _plain(dict(choices)) if choices else None,
        "tokenizer": tokenizer_files(tokenizer) if tokenizer is not None else None,
        "tasks": {str(name): task_entry(task) for name, task in tasks.items()},
        "decoding": decoding,
        "num_bins": int(tokenizer.num_bins) if tokenizer is not None else None,
    }


def tasks_from_config(cfg: Any, tokenizer) -> dict[str, Any]:
    """{source name: Task} of a run config's mixture, built as ``OFADataModule`` builds them (``data.task_options``
    under each source's ``options``)."""
    from ofa_lightning.data.mixture import parse_mixture
    from ofa_lightning.tasks import build_task

    cfg = _plain(cfg) or {}
    task_options = dict(((cfg.get("data") or {}).get("task_options")) or {})
    out = {}
    for source in parse_mixture(cfg.get("mixture") or {}):
        out[source.name] = build_task(source.task, tokenizer, **{**task_options, **source.options})
    return out


def run_dir_of(checkpoint: str | Path) -> Path | None:
    """The run dir above a checkpoint: the nearest folder holding ``config_resolved.yaml``."""
    for parent in Path(checkpoint).resolve().parents:
        if (parent / "config_resolved.yaml").is_file():
            return parent
    return None


@dataclass
class ModelCard:
    """What a checkpoint says about its model; ``origin`` is ``"checkpoint"``, ``"run dir"`` or ``"none"``."""

    config: dict[str, Any] | None = None
    tokenizer_files: dict[str, str] | None = None
    tokenizer_dir: Path | None = None
    task_entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    origin: str = "none"

    def tokenizer(self):
        """The run's tokenizer, or None when neither the checkpoint nor its run dir has one."""
        from ofa_lightning.tokenizer import OFATokenizer

        if self.tokenizer_files:
            return tokenizer_from_files(self.tokenizer_files)
        if self.tokenizer_dir is not None:
            return OFATokenizer.load(self.tokenizer_dir)
        return None

    def tasks(self, tokenizer, **overrides: Any) -> dict[str, Any]:
        """{source name: Task} as the run trained them; ``overrides`` are options put on every task that has them
        (e.g. ``image_size``). A task that can no longer be built (e.g. its candidate file is gone, in a run dir
        without a card) is left out with a warning."""
        from ofa_lightning.tasks import build_task

        if self.task_entries:
            entries = self.task_entries
        elif self.config is not None:
            try:
                return {
                    name: _with(task, overrides) for name, task in tasks_from_config(self.config, tokenizer).items()
                }
            except (OSError, ValueError) as exc:
                log.warning("could not rebuild the run's tasks from its config (%s); using OFA's task defaults", exc)
                return {}
        else:
            return {}
        out = {}
        for name, entry in entries.items():
            try:
                out[name] = _with(build_task(entry["task"], tokenizer, **entry.get("options", {})), overrides)
            except (OSError, ValueError) as exc:
                log.warning("task %r of the checkpoint could not be built (%s); it is left out", name, exc)
        return out


def _with(task, overrides: Mapping[str, Any]):
    if not overrides:
        return task
    from ofa_lightning.tasks import build_task

    options = {**task.options, **{k: v for k, v in overrides.items() if k in task.cfg}}
    if getattr(task, "candidates", None) is not None and "candidates" in options:
        options["candidates"] = list(task.candidates)
    return build_task(type(task).name, task.tokenizer, **options)


def read_model_card(checkpoint: str | Path | Mapping[str, Any], path: str | Path | None = None) -> ModelCard:
    """The card of a checkpoint (a path, or its loaded dict with ``path`` for the run-dir fallback)."""
    if isinstance(checkpoint, Mapping):
        data = checkpoint
    else:
        import torch

        from ofa_lightning.weights.integrity import verify_checkpoint

        path = Path(checkpoint)
        verify_checkpoint(path)
        data = torch.load(path, map_location="cpu", weights_only=True)
    card = data.get(CARD_KEY)
    if isinstance(card, Mapping) and card.get("format") == CARD_FORMAT:
        return ModelCard(
            config=card.get("config"),
            tokenizer_files=card.get("tokenizer"),
            task_entries=dict(card.get("tasks") or {}),
            origin="checkpoint",
        )
    run_dir = run_dir_of(path) if path is not None else None
    if run_dir is None:
        if path is not None:  # a run dir with only tokenizer/ (no config)
            for parent in Path(path).resolve().parents:
                if (parent / "tokenizer" / "ofa_tokenizer.json").is_file():
                    return ModelCard(tokenizer_dir=parent / "tokenizer", origin="run dir")
        return ModelCard()
    from omegaconf import OmegaConf

    config = OmegaConf.to_container(OmegaConf.load(run_dir / "config_resolved.yaml"), resolve=False)
    tok_dir = run_dir / "tokenizer"
    return ModelCard(
        config=config, tokenizer_dir=tok_dir if (tok_dir / "ofa_tokenizer.json").is_file() else None, origin="run dir"
    )


def module_card(module) -> dict[str, Any]:
    """The card of an ``OFALitModule``: its tokenizer and tasks, and ``module.run_config`` (the resolved run config
    ``run.train`` sets); built once per set of tasks."""
    key = tuple(sorted(module.tasks))
    cached = getattr(module, "_ofa_model_card", None)
    if cached is None or cached[0] != key:
        tokenizer = module.tokenizer if hasattr(module.tokenizer, "save") else None
        cached = (
            key,
            build_model_card(
                tokenizer, module.tasks, getattr(module, "run_config", None), getattr(module, "run_choices", None)
            ),
        )
        module._ofa_model_card = cached
    return cached[1]
