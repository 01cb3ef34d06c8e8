"""How fast the OFA model runs: every machine-, kernel- and memory-specific path, kept apart from the model.

``ofa_lightning.model`` is OFA's architecture in plain PyTorch. This package holds the fast paths (oneDNN
prepacked linears and fused convolutions, BatchNorm folding, channels-last, the fast dropout mask, lean CPU
attention, FlexAttention, the index_add bias lookup, the AMD projection orientation, the fused loss, activation and
trunk checkpointing) and one seam that puts them into a model: :func:`apply_speed` (or :func:`build_model`),
switched by one config field, ``model.speed`` (:class:`SpeedConfig`; default profile ``fast``, every path on;
``plain``: none). Each path computes the plain path's function; ``tests/test_speed*.py`` compare them.

:func:`register_model_schema` stores the ``model`` config group's schema with Hydra (:mod:`.schema`; the
training package and the ``ofa-*`` commands call it before composing). The seam and the kernels (torch) load on
first use, so configs and ``--help`` stay light.
"""

from .config import PROFILES, SWITCHES, SpeedConfig
from .schema import register_model_schema

__all__ = [
    "PROFILES",
    "SWITCHES",
    "SpeedConfig",
    "apply_speed",
    "build_model",
    "plain",
    "register_model_schema",
    "speed_of",
]
_SEAM = ("apply_speed", "build_model", "plain", "speed_of")


def __getattr__(name: str):
    if name in _SEAM:
        from . import seam

        return getattr(seam, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
