"""The two quantisers of taming-transformers' VQGANs, with taming's parameter names.

``VectorQuantizer`` (taming ``VectorQuantizer2``, used by ``VQModel``): nearest codebook vector;
parameter ``embedding.weight`` (n_embed, embed_dim). Training loss ``‖sg[z] − e‖² + β‖z − sg[e]‖²`` (taming's
``legacy=False`` form, the one the VQ-VAE paper writes), straight-through gradients.

``GumbelQuantize`` (taming ``GumbelQuantize``, used by ``GumbelVQ``, i.e. OFA's f=8 / 8,192-code OpenImages model):
``proj`` (1×1 convolution, z_channels → n_embed logits) and ``embed.weight`` (n_embed, embed_dim). Training draws
a (hard, straight-through) Gumbel-softmax sample with temperature ``temperature`` and adds the KL term
``kl_weight · Σ q log(q · n_embed)`` to a uniform prior. Encoding (:meth:`codes`) takes the argmax of the logits;
taming's ``forward`` in eval mode still adds Gumbel noise before the argmax (so its codes are a random draw); the
argmax is that distribution's mode and makes encoding deterministic — a deliberate deviation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["VectorQuantizer", "GumbelQuantize"]


class VectorQuantizer(nn.Module):
    def __init__(self, n_embed: int, embed_dim: int, beta: float = 0.25):
        super().__init__()
        self.n_embed, self.embed_dim, self.beta = n_embed, embed_dim, beta
        self.embedding = nn.Embedding(n_embed, embed_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / n_embed, 1.0 / n_embed)

    def codes(self, z: Tensor) -> Tensor:
        """(B, D, h, w) latents → (B, h, w) nearest-code indices."""
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        weight = self.embedding.weight
        dist = flat.pow(2).sum(1, keepdim=True) + weight.pow(2).sum(1)[None] - 2 * flat @ weight.t()
        return dist.argmin(1).view(b, h, w)

    def lookup(self, codes: Tensor) -> Tensor:
        """(B, h, w) indices → (B, embed_dim, h, w) codebook vectors."""
        return self.embedding(codes).permute(0, 3, 1, 2).contiguous()

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        codes = self.codes(z)
        z_q = self.lookup(codes)
        loss = F.mse_loss(z_q, z.detach()) + self.beta * F.mse_loss(z, z_q.detach())
        return z + (z_q - z).detach(), loss, codes


class GumbelQuantize(nn.Module):
    def __init__(
        self,
        num_hiddens: int,
        embed_dim: int,
        n_embed: int,
        kl_weight: float = 5e-4,
        temperature: float = 1.0,
        straight_through: bool = True,
    ):
        super().__init__()
        self.n_embed, self.embed_dim = n_embed, embed_dim
        self.kl_weight, self.temperature, self.straight_through = kl_weight, temperature, straight_through
        self.proj = nn.Conv2d(num_hiddens, n_embed, 1)
        self.embed = nn.Embedding(n_embed, embed_dim)

    def codes(self, z: Tensor) -> Tensor:
        return self.proj(z).argmax(1)

    def lookup(self, codes: Tensor) -> Tensor:
        return self.embed(codes).permute(0, 3, 1, 2).contiguous()

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        logits = self.proj(z)
        if self.training:
            one_hot = F.gumbel_softmax(logits, tau=self.temperature, dim=1, hard=self.straight_through)
        else:
            one_hot = F.one_hot(logits.argmax(1), self.n_embed).permute(0, 3, 1, 2).to(logits.dtype)
        z_q = torch.einsum("bnhw,nd->bdhw", one_hot, self.embed.weight)
        q = F.softmax(logits, dim=1)
        kl = self.kl_weight * torch.sum(q * torch.log(q * self.n_embed + 1e-10), dim=1).mean()
        return z_q, kl, one_hot.argmax(1)
