"""Self-critical sequence training (SCST) with a CIDEr-D reward: OFA's caption stage 2 (OFA-Sys/OFA
``criterions/scst_loss.py``, ``run_scripts/caption/train_caption_stage2.sh``).

Per training batch (caption rows with their references in ``meta["reference"]``):

1. **Samples.** The model is put in eval mode and beam search (beam ``K`` = 5, ``max_len_b`` 16, no-repeat-3, the
   caption task's decoding) returns *all* ``K`` finished beams of every image as its samples; then the model goes
   back to train mode.
2. **Reward.** CIDEr-D of every sample against the image's references, with document frequencies fixed from the
   *training* references (``df: train``, built once from the SCST sources' training shards, one document per
   image) or read from an OFA/self-critical ``coco-train-words.p`` pickle (``df: <path>``). As in OFA, a trailing
   ``.`` is dropped and `` <eos>`` appended to hypotheses and references (and to the references the df is counted
   over).
3. **Baseline.** Leave-one-out: sample ``k``'s baseline is the mean reward of the *other* ``K − 1`` samples of the
   same image; the advantage is ``reward − baseline``.
4. **Loss.** A train-mode forward pass teacher-forced on the samples (``[BOS] + sample`` in, ``sample`` + EOS as
   targets, the image's inputs repeated ``K`` times) gives per-token log-probs; ``loss = −Σ_t logp_t · adv`` over
   every sample token (EOS included) divided by the number of those tokens.

:class:`SCST` is a strategy object: ``OFALitModule(scst={...})`` (``module.scst`` in the config) makes the training
step use :meth:`SCST.loss` instead of the cross-entropy; evaluation, logging, the non-finite-step guard, EMA and
checkpoints are the module's as usual. The arithmetic is in plain functions (:func:`cider_rewards`,
:func:`leave_one_out_baseline`, :func:`scst_loss`) so it can be checked by hand.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ofa_lightning.generation import GenerationConfig, generate
from ofa_lightning.generation.scoring import pad_sequences
from ofa_lightning.metrics.cider import CiderDfTable, cider_d_scores

from .batch import K
from .loss import LossOutput
from .options import Options

__all__ = [
    "SCSTConfig",
    "SCST",
    "wrap_caption",
    "cider_rewards",
    "leave_one_out_baseline",
    "scst_loss",
    "training_df_table",
]

log = logging.getLogger(__name__)


@dataclass
class SCSTConfig(Options):
    section = "scst"
    enabled: bool = True
    beam_size: int = 5  # samples per image = all beams (OFA: 5)
    max_len_b: int = 16  # OFA's caption decoding
    min_len: int = 1
    no_repeat_ngram_size: int = 3
    df: str = "train"  # "train": df of the training references; or a coco-train-words.p style pickle
    df_max_samples: int | None = None  # cap on training samples read to build the df (None: all)
    append_eos: bool = True  # OFA: " <eos>" appended to hypotheses and references
    log_rewards: bool = True  # log train/scst/reward and train/scst/advantage_abs

    def __post_init__(self) -> None:
        if self.beam_size < 2:
            raise ValueError("SCST's leave-one-out baseline needs beam_size >= 2")

    @classmethod
    def from_any(cls, value: Any) -> SCSTConfig:
        if isinstance(value, bool):
            return cls(enabled=value)
        return super().from_any(value)


# ------------------------------------------------------------------------------------------------- arithmetic
def wrap_caption(text: str, append_eos: bool = True) -> str:
    """OFA's reward-side caption form: whitespace collapsed, a trailing ``.`` dropped, `` <eos>`` appended."""
    words = text.strip().split()
    if words and words[-1] == ".":
        words = words[:-1]
    elif words and words[-1].endswith("."):
        words[-1] = words[-1][:-1]
    text = " ".join(w for w in words if w)
    return f"{text} <eos>" if append_eos else text


def cider_rewards(
    samples: Sequence[Sequence[str]], references: Sequence[Sequence[str]], df: CiderDfTable, append_eos: bool = True
) -> Tensor:
    """(B, K) CIDEr-D of each of the ``K`` samples of image ``b`` against that image's references."""
    if len(samples) != len(references):
        raise ValueError(f"{len(samples)} sample groups but {len(references)} reference sets")
    k = {len(s) for s in samples}
    if len(k) != 1:
        raise ValueError(f"every image needs the same number of samples, got {sorted(k)}")
    cands = [wrap_caption(c, append_eos) for group in samples for c in group]
    refs = [[wrap_caption(r, append_eos) for r in refs] for refs, group in zip(references, samples) for _ in group]
    scores = cider_d_scores(cands, refs, df)
    return torch.tensor(scores, dtype=torch.float32).view(len(samples), k.pop())


def leave_one_out_baseline(rewards: Tensor) -> Tensor:
    """(B, K) → (B, K): for sample ``k``, the mean reward of the other ``K − 1`` samples of the same image."""
    k = rewards.size(-1)
    if k < 2:
        raise ValueError("the leave-one-out baseline needs at least 2 samples per image")
    return (rewards.sum(-1, keepdim=True) - rewards) / (k - 1)


def scst_loss(token_lprobs: Tensor, mask: Tensor, advantages: Tensor) -> tuple[Tensor, Tensor, int]:
    """``−Σ_t logp_t · adv_row`` over the kept tokens, divided by their number.

    Args:
        token_lprobs: (N, T) log-probabilities of the sampled tokens.
        mask: (N, T) bool, True at the sample's tokens (EOS included), False at padding.
        advantages: (N,) reward − baseline of each sample (no gradient flows into it).

    Returns ``(loss, loss_sum, ntokens)``.
    """
    mask = mask.to(token_lprobs.dtype)
    per_token = -token_lprobs * advantages.detach().to(token_lprobs.dtype)[:, None] * mask
    ntokens = int(mask.sum().item())
    loss_sum = per_token.sum()
    return loss_sum / max(ntokens, 1), loss_sum, ntokens


def training_df_table(reference_sets: Sequence[Sequence[str]], append_eos: bool = True) -> CiderDfTable:
    """Document frequencies over the training images' reference sets (one document per image)."""
    return CiderDfTable.from_references([[wrap_caption(r, append_eos) for r in refs] for refs in reference_sets])


# ------------------------------------------------------------------------------------------------- strategy
class SCST:
    """The SCST training loss as a strategy object for :class:`~ofa_lightning.training.module.OFALitModule`."""

    def __init__(
        self, config: SCSTConfig | Mapping[str, Any] | bool | None = None, df_table: CiderDfTable | None = None
    ):
        self.config = SCSTConfig.from_any(config)
        self.df_table = df_table

    # -------------------------------------------------------------------------------------------- df
    def ensure_df(self, module) -> CiderDfTable:
        if self.df_table is not None:
            return self.df_table
        cfg = self.config
        if cfg.df != "train":
            self.df_table = CiderDfTable.from_pickle(cfg.df)
        else:
            dm = getattr(module.trainer, "datamodule", None) if module._trainer is not None else None
            if dm is None:
                raise ValueError("scst.df=train needs the training datamodule (or pass df_table=/a df pickle)")
            self.df_table = training_df_table(_training_references(dm, module, cfg.df_max_samples), cfg.append_eos)
            log.info("SCST: CIDEr-D document frequencies from %d training images", int(self.df_table.num_documents))
        return self.df_table

    # -------------------------------------------------------------------------------------------- sampling
    def generation_config(self, task: Any) -> GenerationConfig:
        base = (
            task.generation_config()
            if task is not None and hasattr(task, "generation_config")
            else GenerationConfig.preset("caption")
        )
        return GenerationConfig.from_dict(
            {
                **base.to_dict(),
                "beam_size": self.config.beam_size,
                "nbest": None,
                "max_len_b": self.config.max_len_b,
                "min_len": self.config.min_len,
                "no_repeat_ngram_size": self.config.no_repeat_ngram_size,
                "strategy": "beam",
            }
        )

    @torch.no_grad()
    def sample(self, model, batch: Mapping[str, Any], config: GenerationConfig) -> list[list[list[int]]]:
        """All ``beam_size`` finished beams per row (eval mode; the caller's mode is restored)."""
        was_training = model.training
        model.eval()
        try:
            inputs = {k: batch.get(k) for k in (K.INPUT_IDS, K.PATCH_IMAGES, K.PATCH_MASKS)}
            hyps = generate(model, inputs, config)
        finally:
            model.train(was_training)
        k = config.beam_size
        out = []
        for row in hyps:
            seqs = [h.tokens.tolist() for h in row][:k]
            while len(seqs) < k:  # fewer finished beams than asked (never with OFA's settings): repeat the last
                seqs.append(list(seqs[-1]) if seqs else [])
            out.append(seqs)
        return out

    # -------------------------------------------------------------------------------------------- loss
    def loss(self, module, batch: Mapping[str, Any]) -> LossOutput:
        if K.GROUPS in batch:
            raise ValueError("SCST trains on plain caption batches, not grouped pre-training batches")
        model = module.model
        eos, pad, bos = model.config.eos_token_id, model.config.pad_token_id, model.config.bos_token_id
        names = batch.get(K.TASKS) or []
        task = module.task_for(names[0]) if names else None
        metas = batch.get(K.METAS) or []
        references = [list((m or {}).get("reference") or []) for m in metas]
        if len(references) != batch[K.INPUT_IDS].size(0) or any(not r for r in references):
            raise ValueError("SCST needs every row's references in meta['reference'] (caption task rows)")
        df = self.ensure_df(module)
        gen = self.generation_config(task)
        samples = self.sample(model, batch, gen)  # (B, K, len)
        k = gen.beam_size
        texts = [[_caption_text(task, module, s, eos) for s in group] for group in samples]
        rewards = cider_rewards(texts, references, df, self.config.append_eos)
        advantages = (rewards - leave_one_out_baseline(rewards)).view(-1)

        device = batch[K.INPUT_IDS].device
        seqs = [_with_eos(s, eos) for group in samples for s in group]
        target = pad_sequences(seqs, pad, device)
        prev = pad_sequences([[bos] + s[:-1] for s in seqs], pad, device)
        rep = torch.arange(len(samples), device=device).repeat_interleave(k)
        images = batch.get(K.PATCH_IMAGES)
        masks = batch.get(K.PATCH_MASKS)
        enc = model.encode(
            batch[K.INPUT_IDS][rep],
            images[rep] if images is not None else None,
            masks[rep] if masks is not None else None,
        )
        hidden = model.decode_hidden(prev, enc)
        valid = target.ne(pad)
        logits = model.project(hidden[valid]).float()
        lprobs_kept = F.log_softmax(logits, dim=-1).gather(-1, target[valid][:, None]).squeeze(-1)
        token_lprobs = torch.zeros(target.shape, dtype=lprobs_kept.dtype, device=device)
        token_lprobs = token_lprobs.masked_scatter(valid, lprobs_kept)
        loss, loss_sum, ntokens = scst_loss(token_lprobs, valid, advantages.to(device))
        nll_sum = -(token_lprobs * valid).sum().detach()
        name = names[0] if names else "caption"
        if self.config.log_rewards and module._trainer is not None:
            bs = len(samples)
            module.log("train/scst/reward", float(rewards.mean()), on_step=True, on_epoch=False, batch_size=bs)
            module.log(
                "train/scst/advantage_abs", float(advantages.abs().mean()), on_step=True, on_epoch=False, batch_size=bs
            )
        return LossOutput(
            loss=loss,
            loss_sum=loss_sum,
            nll_sum=nll_sum,
            ntokens=ntokens,
            per_task={name: (loss_sum.detach(), ntokens)},
        )


def _with_eos(tokens: list[int], eos: int) -> list[int]:
    return tokens if tokens and tokens[-1] == eos else [*tokens, eos]


def _caption_text(task: Any, module, tokens: list[int], eos: int) -> str:
    body = [t for t in tokens if t != eos]
    if task is not None and hasattr(task, "parse_prediction"):
        return str(task.parse_prediction(body))
    from ofa_lightning.tasks.text import remove_punctuation

    return remove_punctuation(module.tokenizer.decode(body)).strip()


def _training_references(datamodule, module, max_samples: int | None) -> list[list[str]]:
    """The cleaned reference captions of every training image of the SCST (caption) sources."""
    from ofa_lightning.data.samples import DataStats
    from ofa_lightning.data.shards import iter_json_samples, resolve_shards
    from ofa_lightning.tasks.text import clean_caption

    sets: list[list[str]] = []
    stats = DataStats()  # bad samples and damaged shards: counted, named skips
    for source in datamodule.sources:
        task = datamodule.tasks.get(source.name) if getattr(datamodule, "tasks", None) else None
        task = task or module.task_for(source.name)
        if getattr(task, "name", source.task) != "caption":
            continue
        cfg = getattr(task, "cfg", {}) or {}
        field = cfg.get("captions_field", "captions")
        lowercase = cfg.get("lowercase", True)
        seen = 0
        for url in resolve_shards(datamodule._rooted(source.shards), source.split):
            for _sample, fields in iter_json_samples([url], stats):
                caps = fields.get(field, fields.get("caption") if field == "captions" else None)
                if isinstance(caps, str):
                    caps = [caps]
                if caps is not None and not isinstance(caps, list):
                    stats.skip(f"caption: bad type: {field}", type(caps).__name__, str(fields.get("id", "")))
                    continue
                refs = [clean_caption(c, None, lowercase=lowercase) for c in caps or [] if isinstance(c, str)]
                if refs:
                    sets.append(refs)
                seen += 1
                if max_samples is not None and seen >= max_samples:
                    break
            if max_samples is not None and seen >= max_samples:
                break
    if stats.skipped:
        log.warning("SCST df=train: skipped while reading the references: %s", stats.skipped)
    if not sets:
        raise ValueError("SCST df=train: no caption references found in the mixture's training shards")
    return sets
