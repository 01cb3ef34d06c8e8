"""Decoding settings: one dataclass and a registry of named presets (the tasks register OFA's settings from
OFA-Sys/OFA ``run_scripts/*/evaluate_*.sh`` and ``models/sequence_generator.py``; this module names no task).

Field names follow fairseq's generation arguments (``--beam``, ``--max-len-b``,
``--no-repeat-ngram-size``, ``--unnormalized``, ``--constraint-range`` ...) so
that OFA's evaluation scripts translate one to one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

STRATEGIES = ("beam", "sampling")


@dataclass
class GenerationConfig:
    """How to decode.

    Length: the generated sequence (prefix tokens included, EOS excluded) is at
    most ``max_len = int(max_len_a * src_len + max_len_b)`` tokens, where
    ``src_len`` is the padded width of ``input_ids`` (ModelScope/OFA); EOS is
    forced once that length is reached.  EOS is forbidden while fewer than
    ``min_len`` tokens have been generated (not applied during prefix steps,
    exactly as in fairseq).  ``max_len`` > 0 additionally caps the length
    (fairseq caps at ``max_decoder_positions - 1``; ModelScope does not).
    """

    strategy: str = "beam"  # "beam" search, or "sampling" (fairseq search.Sampling)
    beam_size: int = 5  # beam width; for sampling: number of independent samples per input
    nbest: int | None = None  # hypotheses returned per input (None: all beam_size)
    max_len_a: float = 0.0
    max_len_b: int = 200
    max_len: int = 0
    min_len: int = 1
    normalize_scores: bool = True  # False = OFA's --unnormalized (raw sum of log-probs)
    len_penalty: float = 1.0  # score / len**len_penalty when normalize_scores
    temperature: float = 1.0  # logits / temperature before log-softmax
    unk_penalty: float = 0.0  # subtracted from <unk>'s log-prob
    no_repeat_ngram_size: int = 0
    # --- sampling --------------------------------------------------------
    sampling_topk: int = -1
    sampling_topp: float = -1.0
    seed: int | None = None  # seeds a torch.Generator for sampling (None: global RNG)
    # --- constraints -----------------------------------------------------
    # [start, end): only tokens in the range (plus specials 0-3) may be generated.
    constraint_range: tuple[int, int] | None = None
    gen_code: bool = False  # image-code decoding: code-mode decoder, specials 0-3 forbidden before max_len
    # OFA's --zero-shot: trie / range masks are applied to log-probs after the
    # softmax (no renormalisation) and the trie is walked from the first decoder
    # token (prefix included).
    zero_shot: bool = False
    # Forced prefix tokens: OFA gives every other token min(forced log-probs) - 1
    # (-inf only under a trie), so without a trie a low-scoring "filler" beam can
    # end up best and not start with the prefix.  True = upstream fairseq's -inf.
    strict_prefix: bool = False
    # --- output / implementation ------------------------------------------
    strip_prefix: bool = True  # drop the first len(prefix) tokens from returned hypotheses
    use_cache: bool = True  # KV-cached incremental decoding (False: recompute the prefix each step)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.beam_size < 1:
            raise ValueError("beam_size must be >= 1")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0")
        if self.constraint_range is not None:
            self.constraint_range = parse_range(self.constraint_range)

    def max_length(self, src_len: int) -> int:
        """The ``max_len`` used for a batch whose ``input_ids`` are ``src_len`` wide."""
        max_len = int(self.max_len_a * src_len + self.max_len_b)
        if self.max_len > 0:
            max_len = min(max_len, self.max_len)
        if self.min_len > max_len:
            raise ValueError(f"min_len={self.min_len} is larger than max_len={max_len}")
        return max_len

    # --- presets ---------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> GenerationConfig:
        """A registered preset (a task's decoding settings, e.g. ``caption``, once ``ofa_lightning.tasks`` is
        imported); kwargs override fields."""
        if name not in PRESETS:
            raise ValueError(
                f"unknown generation preset {name!r}; known: {', '.join(sorted(PRESETS)) or 'none'} (the tasks "
                "register their presets: import ofa_lightning.tasks)"
            )
        return replace(PRESETS[name], **overrides)

    @classmethod
    def from_dict(cls, data: dict) -> GenerationConfig:
        """Build from a (Hydra) mapping; ``preset`` picks a base.

        OFA's flag name ``unnormalized: true`` is accepted for ``normalize_scores: false``.
        """
        data = dict(data)
        base = data.pop("preset", None)
        if "unnormalized" in data:
            data["normalize_scores"] = not data.pop("unnormalized")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown GenerationConfig fields {unknown}")
        if base is not None:
            return cls.preset(base, **data)
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)


def parse_range(value: str | Sequence[int]) -> tuple[int, int]:
    """``"50265,58457"`` or ``(50265, 58457)`` → ``(50265, 58457)``."""
    if isinstance(value, str):
        parts = [p for p in value.replace(" ", "").split(",") if p]
    else:
        parts = list(value)
    if len(parts) != 2:
        raise ValueError(f"constraint_range needs two numbers (start, end), got {value!r}")
    start, end = int(parts[0]), int(parts[1])
    if not 4 <= start < end:
        raise ValueError(f"constraint_range must satisfy 4 <= start < end, got {value!r}")
    return start, end


#: named decoding settings; each task registers its own (``Task.decoding`` under the task's name and
#: ``Task.decoding_presets``) when its class registers (``ofa_lightning.tasks.registry.register_task``)
PRESETS: dict[str, GenerationConfig] = {}


def register_preset(name: str, config: GenerationConfig) -> None:
    """Adds (or replaces) the named decoding settings ``name``."""
    if not isinstance(config, GenerationConfig):
        raise TypeError(f"preset {name!r} must be a GenerationConfig, got {type(config).__name__}")
    PRESETS[str(name)] = config
