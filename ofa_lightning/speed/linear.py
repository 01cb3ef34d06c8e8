"""``nn.Linear`` whose CPU inference runs oneDNN with a prepacked weight (the speed switch ``prepacked_linears``).

In eval mode without autograd, on CPU, in fp32 and outside autocast (evaluation,
generation, the encoder benchmark), :class:`PrepackedLinear` calls oneDNN's linear kernel
(``torch.ops.mkldnn._linear_pointwise``, what Inductor's CPU backend emits) with
the weight reordered once into oneDNN's blocked layout
(``torch.ops.mkldnn._reorder_linear_weight``). ``F.linear`` goes to MKL's sgemm,
which on the AMD CPUs measured here takes a non-AVX-512 path: for OFA-Medium's
encoder shapes (2,208 rows × 512 → 2,048, …) oneDNN with a packed weight is
10-25 % faster, and 30 % for the 40-row products of beam search. Outputs equal
``F.linear`` up to fp32 summation order.

The packed weight is cached on the module and rebuilt when the weight changes
(its version counter), dropped when training starts, and left out of pickles and
deep copies (oneDNN's opaque tensors cannot be copied). In eval mode the cache
costs one extra copy of the linear weights (as the folded ResNet's does for the
trunk), which matters for CPU inference of the large sizes. Training, GPUs, autocast
and other dtypes use ``F.linear``.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .onednn import onednn_cpu_ok

log = logging.getLogger(__name__)


class PrepackedLinear(nn.Linear):
    """``nn.Linear`` (same parameters and state dict) with the prepacked oneDNN inference path described above."""

    _broken = False  # set once if this torch build lacks the ops: F.linear from then on
    _packed: tuple | None = None  # ((data_ptr, version), packed weight)

    def forward(self, x: Tensor) -> Tensor:
        if self._prepack_ok(x):
            try:
                return torch.ops.mkldnn._linear_pointwise(x, self._packed_weight(x), self.bias, "none", [], "")
            except RuntimeError as exc:
                log.warning("oneDNN prepacked linear unavailable (%s); using F.linear", exc)
                PrepackedLinear._broken = True
                self._packed = None
        return F.linear(x, self.weight, self.bias)

    def _prepack_ok(self, x: Tensor) -> bool:
        return (
            not PrepackedLinear._broken
            and not self.training
            and not torch.is_grad_enabled()
            and self.weight.dtype == torch.float32
            and x.dim() >= 2
            and x.numel() > 0
            and onednn_cpu_ok(x, (torch.float32,), "_linear_pointwise")
        )

    def _packed_weight(self, x: Tensor) -> Tensor:
        key = (self.weight.data_ptr(), self.weight._version)
        if self._packed is None or self._packed[0] != key:
            rows = x.numel() // x.shape[-1]  # a hint for the blocking only: the packed weight serves any row count
            self._packed = (key, torch.ops.mkldnn._reorder_linear_weight(self.weight.detach(), rows))
        return self._packed[1]

    def train(self, mode: bool = True):
        if mode:
            self._packed = None
        return super().train(mode)

    def __getstate__(self):
        state = self.__dict__.copy()  # (object.__getstate__ would hand out the live __dict__)
        state.pop("_packed", None)
        return state
