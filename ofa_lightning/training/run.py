"""Assemble a run from a resolved Hydra config: tokenizer → DataModule → OFALitModule → Trainer.

``train(cfg)`` is what ``ofa-train`` calls (and what the tests call directly, LHT-style): every output goes
under ``cfg.paths.output_dir`` (the Hydra run dir), never the working directory (Hydra >= 1.2 does not chdir).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ofa_lightning.data.shards import iter_json_samples, resolve_shards
from ofa_lightning.model import OFAConfig
from ofa_lightning.tokenizer import OFATokenizer

log = logging.getLogger(__name__)


def training_texts(datamodule, max_samples: int) -> list[str]:
    """Text of the mixture's training shards, for training the demo's byte-level BPE: the fields each source's task
    declares (``Task.text_fields``)."""
    from ofa_lightning.data.samples import DataStats
    from ofa_lightning.tasks import source_text_fields

    texts: list[str] = []
    stats = DataStats()  # bad samples and damaged shards: counted, named skips, as in training
    for source in datamodule.sources:
        urls = resolve_shards(datamodule._rooted(source.shards), source.split)
        names = source_text_fields(source.task, source.options)
        seen = 0
        for url in urls:
            for _sample, fields in iter_json_samples([url], stats):
                for name in names:
                    value = fields.get(name)
                    if isinstance(value, str):
                        texts.append(value)
                    elif isinstance(value, list):
                        texts.extend(v for v in value if isinstance(v, str))
                seen += 1
                if seen >= max_samples:
                    break
            if seen >= max_samples:
                break
    if stats.skipped:
        log.warning("tokenizer training: skipped %s while reading the mixture's shards", stats.skipped)
    if not texts:
        raise ValueError("no training text found in the mixture's shards to train a tokenizer on")
    return texts


def build_tokenizer(cfg: DictConfig, datamodule, run_dir: Path) -> OFATokenizer:
    """OFA's BPE files, or a BPE trained on the mixture (saved in the run dir, reused on resume)."""
    tcfg = cfg.tokenizer
    saved = run_dir / "tokenizer"
    if (saved / "ofa_tokenizer.json").exists():
        return OFATokenizer.load(saved)
    if tcfg.kind == "ofa_bpe":
        tokenizer = OFATokenizer.from_ofa_files(tcfg.path, num_codes=tcfg.num_codes, num_bins=tcfg.num_bins)
    elif tcfg.kind == "ofa_bert_cn":
        tokenizer = OFATokenizer.from_bert_files(tcfg.path, num_codes=tcfg.num_codes, num_bins=tcfg.num_bins)
    elif tcfg.kind == "checkpoint":
        tokenizer = checkpoint_tokenizer(tcfg.get("path"))
    elif tcfg.kind == "trained":
        texts = training_texts(datamodule, int(tcfg.max_samples))
        tokenizer = OFATokenizer.train_bpe(
            texts, bpe_vocab_size=tcfg.bpe_vocab_size, num_codes=tcfg.num_codes, num_bins=tcfg.num_bins
        )
    else:
        raise ValueError(
            f"tokenizer.kind must be 'ofa_bpe', 'ofa_bert_cn', 'trained' or 'checkpoint', got {tcfg.kind!r}"
        )
    tokenizer.save(saved)
    return tokenizer


def checkpoint_tokenizer(path: str | Path | None) -> OFATokenizer:
    """``tokenizer=checkpoint``: the tokenizer an ``ofa-train`` checkpoint carries (its model card, or its run dir's
    ``tokenizer/``); a converted or OFA checkpoint has none, and the message says to use ``tokenizer=ofa_bpe``."""
    from ofa_lightning.errors import UserError
    from ofa_lightning.training.model_card import read_model_card
    from ofa_lightning.weights.convert import load_checkpoint_file

    if not path:
        raise UserError("tokenizer=checkpoint takes the tokenizer of module.init_from=<checkpoint>; none is given")
    data = load_checkpoint_file(path)
    tokenizer = read_model_card(data, path).tokenizer() if "hyper_parameters" in data else None
    if tokenizer is None:
        kind = (
            "an ofa-train checkpoint without a tokenizer beside it"
            if "hyper_parameters" in data
            else "an OFA or ofa-convert checkpoint: it stores no tokenizer"
        )
        raise UserError(
            f"tokenizer=checkpoint: {path} is {kind}; OFA's checkpoints use OFA's BPE vocabulary, "
            "tokenizer=ofa_bpe (tokenizer.path=<folder of encoder.json, vocab.bpe, dict.txt>)"
        )
    return tokenizer


def model_speed(cfg: DictConfig) -> dict[str, Any] | None:
    """``model.speed``: the model's fast paths (``ofa_lightning.speed.SpeedConfig``), None for the default."""
    from ofa_lightning.speed.config import split_model_node

    return split_model_node(OmegaConf.to_container(cfg.model, resolve=True))[1] or None


def build_model_config(cfg: DictConfig, tokenizer: OFATokenizer) -> OFAConfig:
    from ofa_lightning.speed.config import split_model_node

    # how fast it runs (model.speed) is not what it is: OFALitModule applies it (ofa_lightning.speed)
    model = split_model_node(OmegaConf.to_container(cfg.model, resolve=True))[0]
    if model.get("vocab_size") is None:
        model["vocab_size"] = tokenizer.vocab_size
    config = OFAConfig.from_dict(model)
    if config.vocab_size != tokenizer.vocab_size:
        raise ValueError(f"model.vocab_size={config.vocab_size} but the tokenizer has {tokenizer.vocab_size} ids")
    return config


def build_callbacks(cfg: DictConfig, run_dir: Path) -> list[pl.Callback]:
    from pytorch_lightning.callbacks import LearningRateMonitor

    from ofa_lightning.data import DataStatsCallback
    from ofa_lightning.training.checkpointing import LastCheckpoint, ReplayedSteps, StepLog, StepRNG

    callbacks: list[pl.Callback] = [
        # save_top_k=0 + save_last: last.ckpt is written in place by AtomicCheckpointIO (never a symlink or copy),
        # every N steps and at the end of training
        LastCheckpoint(
            dirpath=run_dir / "checkpoints",
            save_last=True,
            save_top_k=0,
            every_n_train_steps=int(cfg.checkpoint_every_n_steps),
        ),
        DataStatsCallback(log_every_n_steps=int(cfg.trainer.get("log_every_n_steps", 50))),
        ReplayedSteps(),  # after a resume: one metric row / W&B value per step
    ]
    if cfg.get("step_rng", True):  # randomness of step k = f(seed, rank, k): identical after a resume
        callbacks.append(StepRNG(int(cfg.seed)))
    step_log = (cfg.get("tracking") or {}).get("step_log") or {}
    if step_log.get("enabled", False):  # per-step sample ids and loss (kill-and-resume tests)
        callbacks.append(StepLog(step_log.get("path") or run_dir / "step_log"))
    if cfg.logger.mode != "disabled":
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    from ofa_lightning.training.callbacks import default_callbacks  # throughput/MFU, tables, CSV/JSONL

    callbacks.extend(default_callbacks(cfg, run_dir))
    return callbacks


def train(cfg: DictConfig, adjust_resumed: Callable[[DictConfig, int], None] | None = None) -> dict[str, Any]:
    """Fit (and test) one run; returns the final metrics. Writes everything under ``paths.output_dir``.
    ``adjust_resumed(cfg, step)`` is applied to a resumed run's config rebuilt from its checkpoint (written at
    ``step``): the command's ``OFA_SMOKE``."""
    from ofa_lightning.training.module import OFALitModule
    from ofa_lightning.training.resume import (
        PublishRunRecord,
        discard_deferred_hydra_dir,
        prepare_resume,
        publish_run_record,
    )

    start = time.time()
    run_dir = Path(cfg.paths.output_dir)
    try:  # resume: the run's own config + the overrides given now, shapes checked; nothing written (resume.py)
        plan = prepare_resume(cfg, run_dir)
    except BaseException:
        discard_deferred_hydra_dir()
        raise
    cfg = plan.cfg
    if plan.ckpt_path is not None and adjust_resumed is not None:
        adjust_resumed(cfg, plan.step or 0)
    from ofa_lightning.training.preflight import check_config

    try:  # config errors knowable now, before the tokenizer, the data and the model are set up
        check_config(cfg)
    except BaseException:
        discard_deferred_hydra_dir()
        raise
    run_dir.mkdir(parents=True, exist_ok=True)
    if plan.ckpt_path is None:  # a resumed run's record is written once its checkpoint has loaded
        publish_run_record(cfg, run_dir)
    if int(os.environ.get("RANK", 0)) == 0:  # partial files of a checkpoint write that was killed
        from ofa_lightning.training.checkpointing import remove_stale_temporaries

        remove_stale_temporaries(run_dir / "checkpoints")
    pl.seed_everything(int(cfg.seed), workers=True)

    datamodule = instantiate(cfg.data, _convert_="all")  # conf/data: _target_ OFADataModule
    tokenizer = plan.tokenizer or build_tokenizer(cfg, datamodule, run_dir)
    datamodule.tokenizer = tokenizer
    model_config = build_model_config(cfg, tokenizer)

    mcfg = OmegaConf.to_container(cfg.module, resolve=True)
    module = OFALitModule(
        model_config, tokenizer=tokenizer, predictions_dir=str(run_dir / "predictions"), speed=model_speed(cfg), **mcfg
    )
    module.run_config = OmegaConf.to_container(cfg, resolve=True)  # into every checkpoint (model_card.py)
    module.run_choices = plan.choices

    logger = _logger(cfg, run_dir)
    callbacks = build_callbacks(cfg, run_dir)
    if plan.ckpt_path is not None:
        callbacks.append(PublishRunRecord(cfg, run_dir, tokenizer))
    trainer = build_trainer(
        cfg,
        logger=logger if logger is not None else False,
        callbacks=callbacks,
        default_root_dir=str(run_dir),
        enable_checkpointing=True,
    )
    try:
        # weights_only=True: resuming never runs pickled code (our checkpoints hold tensors, containers, scalars)
        trainer.fit(module, datamodule=datamodule, ckpt_path=plan.ckpt_path, weights_only=True)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        if cfg.test_after_fit:
            results = trainer.test(module, datamodule=datamodule, verbose=False)
            for r in results:
                metrics.update({k: float(v) for k, v in r.items()})
    finally:
        _finish_logger()
        discard_deferred_hydra_dir()  # a resume that stopped before its checkpoint loaded: Hydra's record is dropped
    metrics["wall_seconds"] = round(time.time() - start, 1)
    if trainer.global_rank == 0:  # one writer under DDP (rank-local train/* values would race)
        (run_dir / "final_metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True))
    from ofa_lightning.training.callbacks import print_run_summary  # the final metrics table and the run dir

    print_run_summary(metrics, run_dir, rank=trainer.global_rank)
    return metrics


def build_trainer(cfg: DictConfig, **kwargs: Any) -> pl.Trainer:
    """``cfg.trainer`` instantiated (its ``_target_``: ``pl.Trainer``) with :func:`trainer_arguments`, plus
    ``kwargs`` (loggers, callbacks, the run dir)."""
    target, arguments = _trainer_target(cfg)
    return target(**arguments, **kwargs)


def trainer_arguments(cfg: DictConfig) -> dict[str, Any]:
    """The keyword arguments ``cfg.trainer`` gives its ``_target_``, as ``hydra.utils.instantiate`` builds them:
    nested ``_target_`` nodes are instantiated (``conf/trainer/ddp.yaml``: a DDP strategy with a process-group
    timeout), and checkpoints are written by ``AtomicCheckpointIO`` unless ``plugins`` name another one."""
    return _trainer_target(cfg)[1]


def _trainer_target(cfg: DictConfig) -> tuple[Any, dict[str, Any]]:
    from lightning_fabric.plugins import CheckpointIO

    from ofa_lightning.training.checkpointing import AtomicCheckpointIO

    partial = instantiate(cfg.trainer, _partial_=True, _convert_="all")
    kwargs = dict(partial.keywords)
    plugins = kwargs.get("plugins") or []
    plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
    if not any(isinstance(p, CheckpointIO) for p in plugins):
        keep_last = int(OmegaConf.select(cfg, "checkpoint.keep_last", default=2) or 2)
        plugins.append(
            AtomicCheckpointIO(keep_last=keep_last)
        )  # Lightning hands it to the strategy (a given instance too)
    kwargs["plugins"] = plugins
    return partial.func, kwargs


def _logger(cfg: DictConfig, run_dir: Path):
    if cfg.logger.mode == "disabled":
        return None
    from ofa_lightning.training.tracking import make_wandb_logger

    config = OmegaConf.to_container(cfg, resolve=True)
    return make_wandb_logger(
        run_dir,
        project=cfg.logger.project,
        name=cfg.run_name,
        group=cfg.logger.group,
        tags=list(cfg.tags),
        mode=cfg.logger.mode,
        config=config,
    )


def _finish_logger() -> None:
    """End the W&B run of this job (and wait for its log file) so the next multirun job starts its own
    (otherwise it reuses the live run)."""
    from ofa_lightning.training.tracking import finish_wandb

    finish_wandb()


def compose_config(
    overrides: list[str], output_dir: str | Path, root_dir: str | Path | None = None, config_name: str = "train"
) -> DictConfig:
    """Compose the Hydra config outside ``@hydra.main`` (tests, ``ofa-demo``, notebooks).

    ``paths.output_dir`` is given explicitly because no Hydra run dir exists here; ``paths.root_dir`` defaults to
    the launch directory, as in the ``ofa-*`` commands; the folders in ``OFA_CONFIG_PATH`` are searched too.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from ofa_lightning.paths import CONF_DIR, LAUNCH_DIR, search_path_override
    from ofa_lightning.speed import register_model_schema

    register_model_schema()  # the model group's schema
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name=config_name,
            overrides=[
                *overrides,
                *search_path_override(),
                f"paths.output_dir={Path(output_dir).resolve()}",
                f"paths.root_dir={Path(root_dir or LAUNCH_DIR).resolve()}",
            ],
        )
    GlobalHydra.instance().clear()
    return cfg


def evaluate(
    train_cfg: DictConfig,
    ckpt_path: str | Path,
    out_dir: str | Path,
    split: str = "test",
    tokenizer_dir: str | Path | None = None,
    tokenizer: OFATokenizer | None = None,
) -> dict[str, float]:
    """Evaluate a checkpoint with its training run's data/task settings; predictions go to ``out_dir``. The
    tokenizer: ``tokenizer``, else the one saved in ``tokenizer_dir``, else built from ``train_cfg``."""
    import torch

    from ofa_lightning.training.module import OFALitModule

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', got {split!r}")
    if tokenizer is None:
        tokenizer = OFATokenizer.load(tokenizer_dir) if tokenizer_dir else build_tokenizer(train_cfg, None, out_dir)
    datamodule = instantiate(train_cfg.data, tokenizer=tokenizer, _convert_="all")
    module = OFALitModule(
        build_model_config(train_cfg, tokenizer),
        tokenizer=tokenizer,
        predictions_dir=str(out_dir / "predictions"),
        speed=model_speed(train_cfg),
        **OmegaConf.to_container(train_cfg.module, resolve=True),
    )
    module.run_config = OmegaConf.to_container(train_cfg, resolve=True)
    from ofa_lightning.weights.integrity import verify_checkpoint

    verify_checkpoint(ckpt_path)  # a damaged checkpoint is refused naming the file and the member
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    module.on_load_checkpoint(checkpoint)  # first: an adapter-only checkpoint gets its base tensors here
    module.load_state_dict(checkpoint["state_dict"])
    trainer = pl.Trainer(
        accelerator=train_cfg.trainer.accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        default_root_dir=str(out_dir),
    )
    run = trainer.test if split == "test" else trainer.validate
    results = run(module, datamodule=datamodule, verbose=False)
    return {k: float(v) for r in results for k, v in r.items()}
