"""Encoder self-attention through FlexAttention (``model.speed.attention_kernel=flex``): meant for GPU training.

Why. With SDPA (the default, ``attention_kernel=sdpa``; the plain model's only path) the encoder hands every layer one float mask of shape
(B, H, S, S): the absolute position bias, the padding mask and that layer's relative bias summed. At 480 px
(S = 900 patches + the text) and batch 32 that is about 0.6 GB per layer in bf16, written, read and, in the
backward pass, written again as the gradient of the learned biases and then reduced over the batch. On an H100
those sums and reductions, plus PyTorch's memory-efficient attention kernel (FlashAttention takes no additive
bias), were about half of an OFA-Base training step (``benchmarks/suites/gpu_profile.py``).

FlexAttention forms the same scores inside one fused kernel, with nothing of size S × S in memory:

* the absolute bias is a dot product ``pos_q · pos_kᵀ`` (OFA-Sys/OFA ``unify_transformer.py``), so it joins the attention's own
  product by concatenation along the head dimension: ``[q·scale ; pos_q] · [k ; pos_k]ᵀ = q·kᵀ·scale + pos_q·pos_kᵀ``
  (scale 1 in the kernel). Its gradient reaches ``pos_q`` / ``pos_k`` through the kernel's dq / dk;
* the layer's relative bias is a lookup ``table[index[i, j], h]`` in ``score_mod``; the kernel's backward pass adds
  the table's gradient itself;
* padded keys get float32's most negative value in ``score_mod``, as the dense mask gives them.

The result is the dense path's up to summation order (tests compare forward and gradients). Two differences in
practice: the absolute bias enters in fp32 inside the kernel, where the SDPA path forms it in the autocast dtype
first; and the augmented product costs ``2·S²·head_dim`` more FLOPs per head and layer than SDPA's (the dense path
forms the absolute bias once per forward, shared by all layers). Benchmarks count MFU with the dense path's FLOPs.

Limits, each refused with a message rather than worked around:

* no dropout on the attention probabilities (``attention_dropout`` must be 0 while training; OFA's recipes use 0);
* PyTorch's FlexAttention has no CPU backward: on CPU the kernel runs only without autograd (inference, tests),
  and then through the unfused eager reference, which forms the scores like the dense path. Use the default
  ``sdpa`` to train on CPU;
* on CUDA the kernel is ``torch.compile(flex_attention)``: the first step of each new shape compiles it
  (tens of seconds); later steps reuse it. The table gradient is accumulated with atomic adds, so it is not
  bit-reproducible run to run.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from ..model.encoder import Encoder, bucket_table

_NEG = torch.finfo(torch.float32).min
_compiled = None


def _flex_attention(device: torch.device):
    """The fused, compiled kernel on CUDA; the eager reference elsewhere (forward only on CPU)."""
    global _compiled
    from torch.nn.attention.flex_attention import flex_attention

    if device.type != "cuda" or torch.compiler.is_compiling():  # inside a compiled layer: the outer graph fuses it
        return flex_attention
    if _compiled is None:
        _compiled = torch.compile(flex_attention, dynamic=False)
    return _compiled


def refuse_cpu_backward(q: Tensor) -> None:
    """FlexAttention (PyTorch) has no CPU backward; say so before PyTorch's less specific error."""
    if q.device.type == "cpu" and torch.is_grad_enabled() and q.requires_grad:
        raise NotImplementedError(
            "model.speed.attention_kernel=flex cannot train on the CPU: PyTorch's FlexAttention has no CPU backward. "
            "Use model.speed.attention_kernel=sdpa (the default) on CPU; flex is for GPU training."
        )


@dataclass
class FlexScores:
    """Everything the fused kernel needs to form one encoder layer's scores; replaces the (B, H, S, S) mask.

    pos_q, pos_k: (B|1, H, S, hd) projected position embeddings, ``pos_q`` already multiplied by the position
    scaling; index: (B|1, S, S) rows of ``table``; pad: (B, S) True at padded keys; table: (R, H) the layer's
    [text ; image ; zero] relative-bias rows (set per layer with :meth:`with_table`).
    """

    pos_q: Tensor
    pos_k: Tensor
    index: Tensor
    pad: Tensor
    table: Tensor | None = None

    def with_table(self, table: Tensor) -> FlexScores:
        return replace(self, table=table)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, scaling: float, dropout_p: float = 0.0) -> Tensor:
        """softmax(q·kᵀ·scaling + pos_q·pos_kᵀ + table[index] + padding)·v for (B, H, S, hd) inputs → (B, H, S, hd)."""
        if dropout_p > 0.0:
            raise ValueError(
                f"model.speed.attention_kernel=flex has no attention-probability dropout, but attention_dropout="
                f"{dropout_p} while training; set model.attention_dropout=0 (OFA's recipes) or use attention_kernel=sdpa"
            )
        if self.table is None:
            raise ValueError("FlexScores.attend needs the layer's relative-bias table (with_table)")
        refuse_cpu_backward(q)
        b = q.shape[0]
        qa = torch.cat([q * scaling, self.pos_q.to(q.dtype).expand(b, -1, -1, -1)], dim=-1)
        ka = torch.cat([k, self.pos_k.to(k.dtype).expand(b, -1, -1, -1)], dim=-1)
        table, pad = self.table, self.pad
        if self.index.shape[0] == 1:
            index = self.index[0]

            def score_mod(score, bi, h, qi, ki):
                return torch.where(pad[bi, ki], _NEG, score + table[index[qi, ki], h])
        else:
            index = self.index

            def score_mod(score, bi, h, qi, ki):
                return torch.where(pad[bi, ki], _NEG, score + table[index[bi, qi, ki], h])

        fn = _flex_attention(q.device)
        if q.device.type == "cuda":
            return fn(qa, ka, v, score_mod=score_mod, scale=1.0)
        with warnings.catch_warnings():  # "called without torch.compile()": intended off the GPU
            warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
            return fn(qa, ka, v, score_mod=score_mod, scale=1.0)


class FlexEncoder(Encoder):
    """The plain encoder (same parameters) whose layers get :class:`FlexScores` instead of dense biases; its
    attention modules must be :class:`~.attention.SpeedAttention` (``apply_speed`` does both)."""

    def attention_biases(self, pos_q: Tensor, pos_k: Tensor, rel_index: Tensor, padding_mask: Tensor):
        scores = FlexScores(pos_q, pos_k, rel_index, padding_mask)
        for text_table, image_table in zip(self.token_rel_pos_table_list, self.image_rel_pos_table_list):
            yield scores.with_table(bucket_table(text_table, image_table))
