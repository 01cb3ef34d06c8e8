"""Pre-flight: the config errors that can be known before any data or model is set up, raised within seconds.

``train(cfg)`` calls :func:`check_config` right after the resume plan and before the tokenizer, the DataModule and
the model are built (a trained tokenizer reads every source's shards first; a model of OFA-Large takes a minute to
build). Each problem is a :class:`~ofa_lightning.errors.UserError` in one line:

* tasks vs mixture: a mixture entry naming no registered task, an option no task of the entry knows (from
  ``data.task_options`` or the entry's ``options``), an unknown ``mode``;
* image size vs the position grid: a source whose images (``image_size``, after ``data.task_options`` and the
  entry's options) give more patches per side than the model's position tables hold (``model.image_bucket_size``,
  16 px per patch), unless ``model.interpolate_position=true``;
* vocabulary vs checkpoint: ``module.init_from`` a checkpoint whose vocabulary is larger than the tokenizer's
  (``tokenizer=ofa_bpe``: known without reading data; a smaller one is grown by OFA's rule).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ofa_lightning.errors import UserError

log = logging.getLogger(__name__)

__all__ = ["check_config", "PATCH_PX"]

PATCH_PX = 16  # the ResNet trunk's stride: one image patch per 16 x 16 pixels


def _merged(cls: type, attr: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        out.update(klass.__dict__.get(attr, {}) or {})
    return out


def _task_options(cls: type, name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options a task of class ``cls`` would run with (defaults, its mode's, the given ones)."""
    defaults = _merged(cls, "defaults")
    unknown = sorted(set(options) - set(defaults) - {"module", "name", "config"})
    if unknown:
        raise UserError(
            f"mixture entry {name!r}: unknown option(s) {unknown} for task {cls.name!r} (from data.task_options or "
            f"the entry's options); known: {', '.join(sorted(defaults))}"
        )
    cfg = dict(defaults)
    mode = options.get("mode", defaults.get("mode"))
    modes = getattr(cls, "mode_defaults", {}) or {}
    if modes and mode is not None:
        if mode not in modes:
            raise UserError(f"mixture entry {name!r}: mode must be one of {sorted(modes)}, got {mode!r}")
        cfg.update(modes[mode])
    cfg.update(options)
    return cfg


def _check_mixture(cfg: DictConfig, model: Mapping[str, Any]) -> None:
    from ofa_lightning.data.mixture import parse_mixture
    from ofa_lightning.tasks.registry import task_class

    data = OmegaConf.to_container(cfg.data, resolve=True) if cfg.get("data") is not None else {}
    mixture = data.get("mixture", OmegaConf.to_container(cfg.mixture, resolve=True) if "mixture" in cfg else None)
    if mixture is None:
        return
    try:
        sources = parse_mixture(mixture)
    except (TypeError, ValueError) as exc:
        raise UserError(f"mixture: {exc}") from None
    shared = dict(data.get("task_options") or {})
    grid = int(model.get("image_bucket_size") or 42)
    for source in sources:
        if source.options.get("module") or source.options.get("config"):
            continue  # a task of the user's own module: known once that module is imported, at set-up
        try:
            cls = task_class(source.task)
        except ValueError as exc:
            raise UserError(f"mixture entry {source.name!r}: {exc}") from None
        options = _task_options(cls, source.name, {**shared, **source.options})
        size = options.get("image_size")
        if isinstance(size, (int, float)) and size > 0 and not model.get("interpolate_position"):
            patches = math.ceil(float(size) / PATCH_PX)
            if patches > grid:
                raise UserError(
                    f"mixture entry {source.name!r}: image_size={int(size)} gives {patches}×{patches} patches, but "
                    f"the model's position tables cover at most {grid}×{grid} ({grid * PATCH_PX} px); lower "
                    f"image_size or set model.interpolate_position=true"
                )


def _checkpoint_vocab(path: str) -> int | None:
    """The vocabulary size of a checkpoint's token embedding, read without loading its tensors (None: unknown)."""
    import torch

    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - legacy or fairseq files with extra globals: checked when loaded
        return None
    config = (data.get("hyper_parameters") or {}).get("model_config") or data.get("model_config") or {}
    if isinstance(config, Mapping) and config.get("vocab_size"):
        return int(config["vocab_size"])
    state = data.get("state_dict") or data.get("model") or {}
    for key in ("model.encoder.embed_tokens.weight", "encoder.embed_tokens.weight", "embed_tokens.weight"):
        if key in state and hasattr(state[key], "shape"):
            return int(state[key].shape[0])
    return None


def _check_vocabulary(cfg: DictConfig) -> None:
    init_from = OmegaConf.select(cfg, "module.init_from", default=None)
    tokenizer = cfg.get("tokenizer") or {}
    if not init_from or tokenizer.get("kind") != "ofa_bpe" or not tokenizer.get("path"):
        return
    from pathlib import Path

    from ofa_lightning.tokenizer import OFATokenizer
    from ofa_lightning.weights.integrity import verify_checkpoint

    if not Path(str(init_from)).is_file():
        raise UserError(f"module.init_from={init_from}: no such file")
    verify_checkpoint(init_from)
    trained = _checkpoint_vocab(str(init_from))
    if trained is None:
        return
    ours = OFATokenizer.from_ofa_files(
        tokenizer.path, num_codes=tokenizer.get("num_codes"), num_bins=tokenizer.get("num_bins")
    ).vocab_size
    given = OmegaConf.select(cfg, "model.vocab_size", default=None) or ours
    if trained > int(given):
        raise UserError(
            f"module.init_from={init_from} has a vocabulary of {trained} ids, the tokenizer (tokenizer.path="
            f"{tokenizer.path}, {tokenizer.get('num_bins')} bins, {tokenizer.get('num_codes')} codes) and model "
            f"have {given}: a larger checkpoint vocabulary cannot be loaded; use the checkpoint's tokenizer settings"
        )


def check_config(cfg: DictConfig) -> None:
    """Raise the config errors knowable before data and model set-up (see the module doc)."""
    model = OmegaConf.to_container(cfg.model, resolve=True) if cfg.get("model") is not None else {}
    _check_mixture(cfg, model)
    _check_vocabulary(cfg)
