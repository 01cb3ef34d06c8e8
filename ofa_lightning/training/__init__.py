"""Training: OFA's criterion, optimiser + schedule, EMA, evaluation inside the loop, and the LightningModule.

* ``loss``        adjusted label-smoothed cross-entropy (constraints, confidence weights, drop-worst, two groups)
* ``optim``       AdamW, warm-up + polynomial (linear) decay over the configured ``max_steps``, freezing
* ``ema``         fp32 exponential moving average of the weights, checkpointed, swap-in for evaluation
* ``validation``  decode a batch as its task says (generate / candidates / last token), feed metrics
* ``batch``       the batch keys read here (one place) and row helpers
* ``module``      ``OFALitModule``
"""

from .batch import K
from .ema import EMA, EMAConfig
from .loss import (
    LossConfig,
    LossOutput,
    adjusted_label_smoothed_ce,
    allowed_token_mask,
    grouped_loss,
    is_finite,
    seq2seq_loss,
)
from .module import OFALitModule
from .optim import OptimConfig, apply_freezing, build_optimizer, build_scheduler, lr_at, param_groups
from .validation import predict_batch, stable_id

__all__ = [
    "K",
    "EMA",
    "EMAConfig",
    "LossConfig",
    "LossOutput",
    "OFALitModule",
    "OptimConfig",
    "adjusted_label_smoothed_ce",
    "allowed_token_mask",
    "apply_freezing",
    "build_optimizer",
    "build_scheduler",
    "grouped_loss",
    "is_finite",
    "lr_at",
    "param_groups",
    "predict_batch",
    "seq2seq_loss",
    "stable_id",
]

from ofa_lightning.speed import register_model_schema  # noqa: E402

register_model_schema()  # conf/model/*.yaml start from it: composing the train config needs it
