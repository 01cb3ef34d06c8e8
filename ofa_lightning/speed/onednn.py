"""When oneDNN's CPU inference kernels (the ops Inductor's CPU backend emits) may replace the plain ones."""

from __future__ import annotations

import torch
from torch import Tensor


def onednn_cpu_ok(x: Tensor, dtypes: tuple[torch.dtype, ...], op: str) -> bool:
    """``x`` on CPU in one of ``dtypes``, not under CPU autocast (these ops have no autocast rule, so autocast keeps
    the plain path), and a torch build with oneDNN and ``torch.ops.mkldnn.<op>``."""
    return (
        x.device.type == "cpu"
        and x.dtype in dtypes
        and not torch.is_autocast_enabled("cpu")
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, op)
    )
