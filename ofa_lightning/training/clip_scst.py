"""CLIP-SCST: OFA's second text-to-image stage (OFA-Sys/OFA ``criterions/clip_scst_loss.py``,
``run_scripts/image_gen``): self-critical training whose reward is the CLIP similarity of sampled images with their
caption.

Per training batch (text-to-image rows: caption instruction in, image codes out; the caption in
``meta["caption"]``):

1. **Samples.** ``num_samples`` code sequences per caption by top-k sampling in the decoder's code mode (eval mode;
   exactly the image's number of codes, constrained to the VQ codebook), as ``generation/rerank.py`` samples them.
2. **Reward.** The VQ model (the task's ``vq_path``) decodes every sample to an image; the reward is CLIP's cosine
   similarity of that image with the caption (``generation/rerank.py``'s ``ClipReranker``: a local CLIP folder,
   ``clip_path``).
3. **Baseline.** Leave-one-out over the samples of one caption (as ``scst.py``); advantage = reward − baseline.
4. **Loss.** A train-mode forward pass teacher-forced on the samples in code mode; ``−Σ logp · advantage`` over the
   sampled codes and EOS, divided by their number (``scst.scst_loss``).

``module.scst={reward: clip, clip_path: <CLIP folder>, num_samples: 4, top_k: 32}`` selects it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

import ofa_lightning.tasks  # noqa: F401  (the tasks register the text_to_image decoding preset)
from ofa_lightning.errors import UserError
from ofa_lightning.generation import generate
from ofa_lightning.generation.rerank import ClipReranker, code_generation_config
from ofa_lightning.generation.scoring import pad_sequences

from .batch import K
from .loss import LossOutput
from .options import Options
from .scst import leave_one_out_baseline, scst_loss

__all__ = ["CLIPSCSTConfig", "CLIPSCST"]

log = logging.getLogger(__name__)


@dataclass
class CLIPSCSTConfig(Options):
    section = "scst"
    enabled: bool = True
    reward: str = "clip"
    clip_path: str | None = None  # a local CLIP folder (transformers CLIPModel + processor)
    num_samples: int = 4  # samples per caption (leave-one-out baseline over them)
    top_k: int = 32  # top-k of the code distribution (OFA: 256 of 8,192)
    temperature: float = 1.0
    log_rewards: bool = True  # log train/clip_scst/reward

    def __post_init__(self) -> None:
        if self.num_samples < 2:
            raise UserError("CLIP-SCST's leave-one-out baseline needs num_samples >= 2")


class CLIPSCST:
    """The CLIP-SCST training loss as a strategy object for ``OFALitModule`` (``module.scst.reward=clip``)."""

    def __init__(self, config: CLIPSCSTConfig | Mapping[str, Any] | None = None, clip: ClipReranker | None = None):
        self.config = CLIPSCSTConfig.from_any(config)
        self.clip = clip

    def reranker(self) -> ClipReranker:
        if self.clip is None:
            if not self.config.clip_path:
                raise UserError("CLIP-SCST needs a CLIP model: module.scst.clip_path=<local CLIP folder>")
            self.clip = ClipReranker.from_pretrained(self.config.clip_path)
        return self.clip

    @torch.no_grad()
    def sample(self, model, batch: Mapping[str, Any], task: Any, vq: Any) -> list[list[list[int]]]:
        """``num_samples`` code-token sequences per row (eval mode; the caller's mode is restored)."""
        code_offset = int(task.tokenizer.code_range[0])
        config = code_generation_config(
            task.num_codes,
            (code_offset, code_offset + int(vq.n_embed)),
            num_samples=self.config.num_samples,
            top_k=min(self.config.top_k, int(vq.n_embed)),
            temperature=self.config.temperature,
            seed=None,
        )
        was_training = model.training
        model.eval()
        try:
            hyps = generate(model, {K.INPUT_IDS: batch[K.INPUT_IDS]}, config)
        finally:
            model.train(was_training)
        return [[h.tokens.tolist() for h in row][: self.config.num_samples] for row in hyps]

    @torch.no_grad()
    def rewards(self, samples: list[list[list[int]]], captions: list[str], code_offset: int, vq: Any) -> torch.Tensor:
        """CLIP cosine similarity of each sample's decoded image with its row's caption: (B, num_samples)."""
        clip = self.reranker()
        out = []
        for group, caption in zip(samples, captions):
            codes = torch.tensor([[t - code_offset for t in s if t >= code_offset] for s in group])
            images = vq.decode_to_pil(codes)
            out.append(clip.scores(images, caption).float().cpu())
        return torch.stack(out)

    def loss(self, module, batch: Mapping[str, Any]) -> LossOutput:
        if K.GROUPS in batch:
            raise UserError("CLIP-SCST trains on plain text-to-image batches, not grouped pre-training batches")
        model = module.model
        eos, pad, bos = model.config.eos_token_id, model.config.pad_token_id, model.config.bos_token_id
        names = batch.get(K.TASKS) or []
        task = module.task_for(names[0]) if names else None
        vq = task.vq() if task is not None and hasattr(task, "vq") else None
        if vq is None:
            raise UserError("CLIP-SCST needs text-to-image rows whose task has a VQ model (option vq_path)")
        captions = [str((m or {}).get("caption") or "") for m in batch.get(K.METAS) or []]
        if len(captions) != batch[K.INPUT_IDS].size(0) or not all(captions):
            raise UserError("CLIP-SCST needs every row's caption in meta['caption'] (text-to-image rows)")
        samples = self.sample(model, batch, task, vq)
        code_offset = int(task.tokenizer.code_range[0])
        rewards = self.rewards(samples, captions, code_offset, vq)
        advantages = (rewards - leave_one_out_baseline(rewards)).view(-1)

        device = batch[K.INPUT_IDS].device
        k = self.config.num_samples
        seqs = [s if s and s[-1] == eos else [*s, eos] for group in samples for s in group]
        target = pad_sequences(seqs, pad, device)
        prev = pad_sequences([[bos] + s[:-1] for s in seqs], pad, device)
        rep = torch.arange(len(samples), device=device).repeat_interleave(k)
        enc = model.encode(batch[K.INPUT_IDS][rep])
        code_masks = torch.ones(len(seqs), dtype=torch.bool, device=device)
        hidden = model.decode_hidden(prev, enc, code_masks)
        valid = target.ne(pad)
        logits = model.project(hidden[valid]).float()
        kept = F.log_softmax(logits, dim=-1).gather(-1, target[valid][:, None]).squeeze(-1)
        token_lprobs = torch.zeros(target.shape, dtype=kept.dtype, device=device).masked_scatter(valid, kept)
        loss, loss_sum, ntokens = scst_loss(token_lprobs, valid, advantages.to(device))
        nll_sum = -(token_lprobs * valid).sum().detach()
        if self.config.log_rewards and module._trainer is not None:
            module.log(
                "train/clip_scst/reward", float(rewards.mean()), on_step=True, on_epoch=False, batch_size=len(samples)
            )
        name = names[0] if names else "text_to_image"
        return LossOutput(
            loss=loss,
            loss_sum=loss_sum,
            nll_sum=nll_sum,
            ntokens=ntokens,
            per_task={name: (loss_sum.detach(), ntokens)},
        )
