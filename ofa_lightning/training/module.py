"""``OFALitModule``: OFA + its tasks as a LightningModule.

Training: OFA's adjusted label-smoothed cross-entropy (``loss.py``) on plain or grouped (pre-training) batches,
with the examples' constraints (trie / code range / bin range) and confidence weights. A step whose loss is not
finite on any rank is skipped on every rank and counted: ``training_step`` returns a zero that touches every
trainable parameter (so backward and DDP's all-reduce still run; Lightning forbids returning None under DDP) and
``on_before_optimizer_step`` drops the gradients, so AdamW changes nothing (no moment update, no weight decay) and
the EMA is not updated. Lightning still counts the step: it advances ``global_step`` and the LR schedule (fairseq
does not count skipped updates; here one clock drives data position, schedule and checkpoints, which keeps resumes
exact). Non-finite gradients under a finite loss are skipped the same way (without an AMP scaler, which handles
them itself), and ``nonfinite.max_consecutive`` skips in a row stop the run with a message naming the step and the
tasks of the batch (``guards.py``). Logged per step (rank-local, no collective): ``train/loss``, ``train/nll``,
``train/ntokens``, ``train/lr``, ``train/<task>/loss``, ``train/skipped_nonfinite``. The LR schedule length is the
config's ``optim.max_steps`` (or the Trainer's configured ``max_steps``), never ``estimated_stepping_batches``
(reading it drops the stateful-dataloader state on resume, Lightning-AI/pytorch-lightning#20550). Gradient
clipping and precision are the Trainer's (``gradient_clip_val``, ``precision``).

Evaluation (validation and test) is ``evaluation_loop.py``'s mixin, what goes into checkpoints
``checkpoint_state.py``'s, LoRA (``peft``) ``peft.py``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from ofa_lightning.errors import UserError
from ofa_lightning.generation import OFA_BIN_RANGE, OFA_CODE_RANGE, range_mask
from ofa_lightning.metrics import build_metric
from ofa_lightning.model import OFAConfig, OFAModel
from ofa_lightning.speed import SpeedConfig, apply_speed, speed_of

from .batch import K, batch_size
from .checkpoint_state import CheckpointStateMixin
from .ema import EMA, EMAConfig
from .evaluation_loop import EvaluationMixin
from .guards import NonFiniteGuard, batch_task_counts, grads_are_finite
from .loss import LossConfig, LossOutput, grouped_loss, is_finite
from .optim import OptimConfig, apply_freezing, build_optimizer, build_scheduler
from .peft import PEFTConfig, apply_peft
from .tracking import _plain
from .validation import TokenLoss

__all__ = ["OFALitModule"]

log = logging.getLogger(__name__)


class OFALitModule(EvaluationMixin, CheckpointStateMixin, pl.LightningModule):
    """OFA + tasks as a LightningModule.

    Args:
        model: an ``OFAModel``, an ``OFAConfig``, or a mapping for ``OFAConfig.from_dict`` (``size`` + overrides).
        tokenizer: the ``OFATokenizer`` (for task construction from configs and the code/bin ranges).
        tasks: ``{name: Task}`` (or task configs for ``build_task_from_config``, or a list of tasks); names are
            eval source names or task names. Empty: taken from the Trainer's datamodule in ``setup``.
        optim: ``OptimConfig`` or its mapping (lr, betas, eps, weight_decay, exclude_norm_bias_from_decay,
            max_steps, warmup_steps, warmup_ratio, end_lr, power, fused, freeze_embeddings, freeze_resnet_bn,
            freeze_resnet).
        loss: ``LossConfig`` or its mapping (label_smoothing, drop_worst_ratio, drop_worst_after, constrained).
        ema: ``EMAConfig``, its mapping, or a bool (enabled, decay, start_step, update_every, evaluate_with_ema).
        compile: ``torch.compile`` the encoder and decoder for the training loss (generation stays eager).
        speed: the model's fast paths (``ofa_lightning.speed.SpeedConfig``, its mapping or a profile name; the
            config's ``model.speed``); None: the ``fast`` profile. Applied to the model however it was given.
        sample_patch_num: OFA's pre-training patch sampling in training. ``"task"``: the tasks' own
            ``sample_patch_num`` option when every row of the (group) batch agrees; an int: always (except for
            grouped batches' non-image-text group); None/0: never.
        metric_options: ``{metric name: kwargs for build_metric}`` (e.g. a CIDEr df file).
        eval_sources: ``{source name: task name}`` whose metrics are created up front (the datamodule's eval
            sources are added in ``setup``; unknown sources are added when first seen).
        val_loss: also compute the (teacher-forced) loss on evaluation batches.
        keep_predictions: keep evaluation predictions (``self.last_predictions``); ``predictions_dir`` writes them.
        candidate_chunk_size: candidates decoded together in all-candidate scoring.
        scst: SCST (caption stage 2, ``scst.py``): a mapping of ``SCSTConfig`` options (or True) makes the training
            loss self-critical CIDEr-D optimisation instead of cross-entropy; ``reward: clip`` the text-to-image
            stage 2 (CLIP similarity of sampled images, ``clip_scst.py``); None/False: cross-entropy.
        init_from: start from these weights (our ``.ckpt``, an ``ofa-convert`` file or an OFA checkpoint;
            ``warm_start.py``); ``init_from_ema`` takes the checkpoint's EMA weights.
        nonfinite: ``{max_consecutive: 10, check_grads: true}`` (``guards.py``): steps with a non-finite loss (or,
            without an AMP scaler, non-finite gradients) are skipped and counted; ``max_consecutive`` skips in a row
            stop the run with a ``NonFiniteLossError`` naming the step and the batch's tasks (0 = never stop).
        model_init: from-scratch initialisation on top of OFA's (``ofa_lightning/model/init.py``; skipped with
            ``init_from``): ``{linear: bert|xavier, location: none|sincos, location_image_size: px}``.
        peft: ``"lora"`` or a mapping of ``PEFTConfig`` options (``peft.py``): LoRA adapters on the (``init_from``)
            weights, the rest frozen; None: full fine-tuning.
    """

    def __init__(
        self,
        model: OFAModel | OFAConfig | Mapping[str, Any],
        tokenizer: Any = None,
        tasks: Mapping[str, Any] | Sequence[Any] | None = None,
        optim: OptimConfig | Mapping[str, Any] | None = None,
        loss: LossConfig | Mapping[str, Any] | None = None,
        ema: EMAConfig | Mapping[str, Any] | bool | None = None,
        compile: bool = False,
        speed: SpeedConfig | Mapping[str, Any] | str | None = None,
        sample_patch_num: int | str | None = "task",
        metric_options: Mapping[str, Mapping[str, Any]] | None = None,
        eval_sources: Mapping[str, str] | None = None,
        val_loss: bool = True,
        keep_predictions: bool = True,
        predictions_dir: str | None = None,
        candidate_chunk_size: int = 20,
        scst: Mapping[str, Any] | bool | None = None,
        init_from: str | None = None,
        init_from_ema: bool = False,
        nonfinite: Mapping[str, Any] | None = None,
        model_init: Mapping[str, Any] | None = None,
        peft: Mapping[str, Any] | str | bool | None = None,
    ):
        super().__init__()
        model = _plain(model)
        if isinstance(model, OFAModel):
            self.model = model
        else:
            cfg = model if isinstance(model, OFAConfig) else OFAConfig.from_dict(model)
            self.model = OFAModel(cfg)
            model_init = dict(_plain(model_init) or {})
            if model_init and not init_from:  # from-scratch start only: loaded weights would replace it anyway
                from ofa_lightning.model.init import apply_model_init

                apply_model_init(
                    self.model, bin_range=tokenizer.bin_range if tokenizer is not None else None, **model_init
                )
        if init_from:
            from .warm_start import load_initial_weights

            load_initial_weights(self.model, init_from, use_ema=init_from_ema)
        apply_speed(self.model, _plain(speed))
        self.tokenizer = tokenizer
        self.optim_cfg = OptimConfig.from_any(_plain(optim))
        self.loss_cfg = LossConfig.from_any(_plain(loss))
        if self.loss_cfg.fused is None:  # the fused criterion is one of the model's speed paths
            self.loss_cfg.fused = speed_of(self.model).on("fused_loss")
        self.ema_cfg = EMAConfig.from_any(_plain(ema))
        self.peft_cfg = PEFTConfig.parse(_plain(peft))
        self.peft_base = str(init_from) if init_from else None
        if self.peft_cfg is not None:
            if self.peft_cfg.adapter_only_checkpoints and not init_from:
                raise UserError(
                    "module.peft with adapter-only checkpoints needs the base weights: set module.init_from=<file> "
                    "(or module.peft.adapter_only_checkpoints=false)"
                )
            if not self.peft_cfg.train_resnet:  # a frozen trunk must not update its BatchNorm statistics
                self.optim_cfg.freeze_resnet_bn = True
        self.frozen = apply_freezing(self.model, self.optim_cfg)
        if self.peft_cfg is not None:
            self.frozen["peft"] = apply_peft(self.model, self.peft_cfg)
        self.tasks: dict[str, Any] = self._build_tasks(_plain(tasks))
        if isinstance(sample_patch_num, str) and sample_patch_num != "task":
            raise ValueError(f"sample_patch_num must be 'task', an int or None, got {sample_patch_num!r}")
        self.sample_patch_num = sample_patch_num
        self.metric_options = {k: dict(v) for k, v in (_plain(metric_options) or {}).items()}
        self.val_loss = bool(val_loss)
        self.keep_predictions = bool(keep_predictions)
        self.predictions_dir = predictions_dir
        self.candidate_chunk_size = int(candidate_chunk_size)
        scst = _plain(scst)
        if scst and (scst is True or dict(scst).get("enabled", True)):
            from .scst import SCST

            if scst is not True and dict(scst).get("reward", "cider") == "clip":  # text-to-image stage 2
                from .clip_scst import CLIPSCST

                self.scst: Any = CLIPSCST(scst)
            else:
                self.scst = SCST({k: v for k, v in dict(scst if scst is not True else {}).items() if k != "reward"})
        else:
            self.scst = None

        self.eval_metrics = nn.ModuleDict()
        self.eval_losses = nn.ModuleDict()
        self._metric_names: dict[str, tuple[str, str]] = {}  # ModuleDict key -> (source, metric name)
        for name, task in self.tasks.items():
            self.register_eval_source(name, task)
        for source, task_name in (_plain(eval_sources) or {}).items():
            self.register_eval_source(source, self.task_for(task_name))

        self.ema: EMA | None = EMA.from_config(self.model, self.ema_cfg) if self.ema_cfg.enabled else None
        self._compiled = (
            (torch.compile(self.model.encode), torch.compile(self.model.decode_hidden)) if compile else (None, None)
        )
        self._range_masks: dict[tuple, Tensor] = {}
        self._predictions: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.last_predictions: dict[str, dict[str, list[dict[str, Any]]]] = {}
        self._last_ema_step = -1
        self._skip_update = False
        self._last_update_skipped = False
        self.skipped_nonfinite = 0
        self.nonfinite = NonFiniteGuard.from_any(_plain(nonfinite))  # guards.py: stop after N skips in a row
        self._batch_tasks: dict[str, int] = {}
        self.samples_seen = 0
        self.tokens_seen = 0
        self.save_hyperparameters(
            {
                "model_config": self.model.config.to_dict(),
                "speed": speed_of(self.model).to_dict(),
                "optim": self.optim_cfg.to_dict(),
                "loss": self.loss_cfg.to_dict(),
                "ema": self.ema_cfg.to_dict(),
                "compile": bool(compile),
                "sample_patch_num": sample_patch_num,
                "tasks": sorted(self.tasks),
                "peft": self.peft_cfg.to_dict() if self.peft_cfg is not None else None,
            }
        )

    # ------------------------------------------------------------------------------------------------ tasks
    def _build_tasks(self, tasks: Any) -> dict[str, Any]:
        if not tasks:
            return {}
        from ofa_lightning.tasks import Task, build_task_from_config

        items = (
            tasks.items()
            if isinstance(tasks, Mapping)
            else ((getattr(t, "name", str(i)), t) for i, t in enumerate(tasks))
        )
        out = {}
        for name, task in items:
            if not isinstance(task, Task):
                if self.tokenizer is None:
                    raise ValueError(f"task {name!r} is a config: building it needs a tokenizer")
                task = build_task_from_config(task, self.tokenizer)
            out[str(name)] = task
        return out

    def task_for(self, name: str | None, default: Any = None) -> Any:
        """The task registered under ``name`` (a source name), else the one whose ``Task.name`` is ``name``."""
        if name is None:
            return default
        if name in self.tasks:
            return self.tasks[name]
        for task in self.tasks.values():
            if getattr(task, "name", None) == name:
                return task
        return default

    def register_eval_source(self, source: str, task: Any) -> None:
        """Create the metrics (and the loss meter) of one evaluation source, once."""
        if task is None:
            return
        if source not in self.eval_losses:
            self.eval_losses[source] = TokenLoss().to(self.device)
        for metric in getattr(task, "metrics", ()) or ():
            key = f"{source}__{metric}"
            if key not in self.eval_metrics:
                self.eval_metrics[key] = build_metric(metric, **self.metric_options.get(metric, {})).to(self.device)
                self._metric_names[key] = (source, metric)

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None:
            return
        dm_tasks = getattr(dm, "tasks", None) or {}
        for name, task in dm_tasks.items():
            self.tasks.setdefault(name, task)
        for name in list(getattr(dm, "val_names", None) or []) + list(getattr(dm, "test_names", None) or []):
            self.register_eval_source(name, dm_tasks.get(name) or self.task_for(name))

    # ------------------------------------------------------------------------------------------------ loss
    @property
    def pad_id(self) -> int:
        return self.model.config.pad_token_id

    def _range(self, kind: str) -> tuple[int, int]:
        attr = {"codes": "code_range", "bins": "bin_range"}[kind]
        if self.tokenizer is not None and hasattr(self.tokenizer, attr):
            return tuple(getattr(self.tokenizer, attr))
        return OFA_CODE_RANGE if kind == "codes" else OFA_BIN_RANGE

    def row_constraints(self, batch: Mapping[str, Any]) -> list[Any]:
        """Per row: None, the task's ``Trie`` ("trie") or an allowed-token mask (V,) ("codes", "bins")."""
        names = batch.get(K.TASKS) or []
        cons = batch.get(K.CONSTRAINTS) or [None] * len(names)
        vocab = self.model.config.vocab_size
        out: list[Any] = []
        for i, con in enumerate(cons):
            if con is None:
                out.append(None)
            elif con == "trie":
                task = self.task_for(names[i] if i < len(names) else None)
                if task is None:
                    raise KeyError(
                        f"row {i} asks for its task's trie but task {names[i]!r} is not registered "
                        f"with the module (known: {sorted(self.tasks)})"
                    )
                out.append(task.constraint_trie())
            elif con in ("codes", "bins"):
                key = (con, vocab, str(self.device))
                if key not in self._range_masks:
                    self._range_masks[key] = range_mask(vocab, self._range(con), device=self.device)
                out.append(self._range_masks[key])
            else:
                raise ValueError(f"unknown constraint {con!r} (known: trie, codes, bins)")
        return out

    def _sample_patch_num(self, batch: Mapping[str, Any]) -> int | None:
        if batch.get(K.PATCH_IMAGES) is None or batch.get(K.SAMPLE_PATCHES) is False:
            return None
        if self.sample_patch_num != "task":
            return int(self.sample_patch_num) if self.sample_patch_num else None
        values = {getattr(self.task_for(n), "cfg", {}).get("sample_patch_num") for n in (batch.get(K.TASKS) or [])}
        return values.pop() if len(values) == 1 else None

    def compute_loss(self, batch: Mapping[str, Any], train: bool = True) -> LossOutput:
        encode, decode_hidden = self._compiled if train else (None, None)
        return grouped_loss(
            self.model,
            batch,
            self.loss_cfg,
            self.pad_id,
            constraints_fn=self.row_constraints,
            drop_worst=train
            and self.loss_cfg.drop_worst_ratio > 0
            and self.global_step > self.loss_cfg.drop_worst_after,
            sample_patch_num_fn=self._sample_patch_num if train else None,
            encode=encode,
            decode_hidden=decode_hidden,
        )

    # ------------------------------------------------------------------------------------------------ training
    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        return self.model(*args, **kwargs)

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        out = self.scst.loss(self, batch) if self.scst is not None else self.compute_loss(batch, train=True)
        bs = batch_size(batch)
        finite = is_finite(out.loss)
        if self._trainer is not None and self.trainer.world_size > 1:
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        self._batch_tasks = batch_task_counts(batch)
        if not finite:
            self.skipped_nonfinite += 1
            self._skip_update = True
            self.log(
                "train/skipped_nonfinite", float(self.skipped_nonfinite), on_step=True, on_epoch=False, batch_size=bs
            )
            # every rank took the same decision, so under DDP every rank raises at the same step (no hang)
            self.nonfinite.skip(self.global_step, "loss", tasks=self._batch_tasks, per_task=out.per_task)
            return self._zero_loss()
        self.samples_seen += bs
        self.tokens_seen += out.ntokens
        logs = {
            "train/loss": out.loss.detach(),
            "train/nll": out.nll.detach(),
            "train/ntokens": float(out.ntokens),
            "train/skipped_nonfinite": float(self.skipped_nonfinite),
        }
        if self._trainer is not None and self.trainer.optimizers:
            logs["train/lr"] = float(self.trainer.optimizers[0].param_groups[0]["lr"])
        for task, (s, n) in out.per_task.items():
            logs[f"train/{task}/loss"] = s / n
        self.log("train/loss", logs.pop("train/loss"), on_step=True, on_epoch=False, prog_bar=True, batch_size=bs)
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=bs)
        return out.loss

    def _zero_loss(self) -> Tensor:
        """A zero touching every trainable parameter: backward (and DDP's gradient all-reduce) run as usual with
        zero gradients, which ``on_before_optimizer_step`` then drops, so the optimiser changes nothing (Lightning
        forbids returning None from ``training_step`` under DDP, and AdamW would move weights on zero gradients)."""
        params = [p[(0,) * p.dim()].reshape(1) for p in self.parameters() if p.requires_grad and p.numel()]
        return torch.cat(params).sum() * 0.0

    def _amp_scaler_active(self) -> bool:
        plugin = getattr(self._trainer, "precision_plugin", None) if self._trainer is not None else None
        return getattr(plugin, "scaler", None) is not None

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # finite loss, non-finite gradients (after DDP's all-reduce: every rank agrees); with an AMP GradScaler the
        # scaler skips such steps itself and backs off its scale (guards.py)
        if (
            not self._skip_update
            and self.nonfinite.check_grads
            and not self._amp_scaler_active()
            and not grads_are_finite(p for group in optimizer.param_groups for p in group["params"])
        ):
            self.skipped_nonfinite += 1
            self._skip_update = True
            self.log("train/skipped_nonfinite", float(self.skipped_nonfinite), on_step=True, on_epoch=False)
            self.nonfinite.skip(self.global_step, "gradient", tasks=self._batch_tasks)
        self._last_update_skipped = self._skip_update
        if self._skip_update:  # drop the whole update (every accumulated micro-batch), as fairseq does
            for group in optimizer.param_groups:
                for p in group["params"]:
                    p.grad = None
            self._skip_update = False
        else:
            self.nonfinite.ok()

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        # the EMA follows the update at once: a checkpoint written at this step (ModelCheckpoint runs in
        # on_train_batch_end, before the module's hook) then holds the EMA of this step's weights, so a resumed run
        # continues the same average; a skipped (non-finite) update leaves the EMA alone
        if self.ema is not None and self.global_step + 1 != self._last_ema_step:
            self._last_ema_step = self.global_step + 1  # the step this update completes (global_step counts it next)
            if not self._last_update_skipped:
                self.ema.update(self.model, self._last_ema_step)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = build_optimizer(self.model, self.optim_cfg)
        max_steps = self.optim_cfg.max_steps
        if max_steps is None and self._trainer is not None and self.trainer.max_steps and self.trainer.max_steps > 0:
            max_steps = self.trainer.max_steps  # the configured value, not estimated_stepping_batches
        scheduler = build_scheduler(optimizer, self.optim_cfg, max_steps)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1, "name": "lr"},
        }
