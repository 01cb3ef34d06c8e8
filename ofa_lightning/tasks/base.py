"""The task seam (LAVIS-style): a task turns one raw shard sample into model inputs and
turns generated tokens back into a prediction it can score.

Tasks know tokens, prompts, decoding settings and metrics — not trainers or data loaders.
``data/`` builds examples through tasks; ``training/`` asks tasks how to evaluate.

Contract (names other modules rely on)
--------------------------------------
``Task.build_example(sample, image, train, rng) -> Example | None``; ``Task.generation_config()``;
``Task.parse_prediction(tokens, example)``; class attributes ``name``, ``metrics``, ``group``.

Added on top of that contract
-----------------------------
``Example.decoder_prompt``
    OFA's ``decoder_prompt``: the leading part of ``prev_output`` that is given, not predicted (starts with BOS).
    ``[BOS]`` for plain seq2seq tasks; ``[BOS] + question`` for VQA/SNLI-VE's ``prev_output`` prompt; the whole
    source for GLUE. Beam search forces ``decoder_prompt[1:]`` as ``prefix_tokens``; all-candidate scoring uses
    it as the prompt. The answer starts at target index ``len(decoder_prompt) - 1``.
``Example.meta["reference"]``
    The ground truth in the form the task's metrics take: caption reference list, VQA ``{answer: conf}``, gold
    box in original-image pixels, label string, summary ... ``None`` for unlabelled rows (test splits).
``Task.inference``
    How evaluation decodes: ``"generate"`` (beam search/sampling with :meth:`Task.generation_config`),
    ``"candidates"`` (all-candidate scoring over :attr:`Task.candidates` with :meth:`Task.constraint_trie`),
    ``"last_token"`` (one teacher-forced pass, argmax over the candidate label tokens at the last position: GLUE).
``Task.candidates`` / :meth:`Task.candidate_sequences` / :meth:`Task.constraint_trie`
    Closed answer set (strings) of classification-like tasks (VQA's 3129 answers, yes/no/maybe, class names),
    their token sequences (``BPE(" " + answer) + [EOS]``) and the prefix tree OFA uses for constrained training
    and trie-constrained beam search. ``None`` for open-ended tasks.
``Task.skips`` / ``strict``
    Bad input (missing or mistyped field, empty or over-long text, a box outside the image or inverted, a
    missing image ...) makes :meth:`Task.build_example` return ``None`` and count the reason in ``task.skips``
    (a ``collections.Counter``, keys like ``"missing field: question"``); with the option ``strict=True`` it
    raises :class:`BadSampleError` naming the sample id and the field instead.
``Task.cfg``
    The task's options: class ``defaults`` (merged along the class hierarchy), then ``mode_defaults[mode]``
    for tasks with a ``mode`` option (``finetune`` / ``pretrain``), then the user's options. Unknown option
    names raise ``ValueError`` (catches typos in ``conf/task/*.yaml``).
Subclasses implement ``_build`` (same arguments as ``build_example``) and raise :class:`SkipSample` for bad
input; the helpers (:meth:`Task.text`, :meth:`Task.box`, :meth:`Task.make_example` ...) raise it for them.
"""

from __future__ import annotations

import random
import string
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from PIL import Image

from .lists import load_string_list
from .sample_access import BadSampleError, SampleAccess, SkipSample
from .scoring import row_score

__all__ = [
    "Example",
    "Task",
    "SkipSample",
    "BadSampleError",
    "IMAGE_TEXT_GROUP",
    "OTHER_GROUP",
    "INFERENCE_MODES",
    "load_string_list",
]

IMAGE_TEXT_GROUP = "image-text"
OTHER_GROUP = "other"
INFERENCE_MODES = ("generate", "candidates", "last_token")


@dataclass
class Example:
    """One model-ready example. Token lists are plain Python ints; the collate pads them.

    source:      encoder tokens, ``[BOS] + BPE(prompt) + [EOS]``.
    prev_output: decoder input, starts with BOS (teacher forcing).
    target:      next-token targets aligned with ``prev_output`` (same length); positions that
                 carry no loss (e.g. the question prefix of VQA's ``prev_output`` prompt) hold PAD.
    image:       normalised (3, H, W) float tensor, or None for text-only tasks. Examples built by the data
                 loaders (``data.samples.build_example``) may hold a ``PendingImage`` instead (uint8 pixels whose
                 normalisation the collate does; ``images.image_tensor`` gives the float tensor).
    weight:      per-example loss weight (OFA's "conf": VQA answer confidence, 2.0 for v2 samples …).
    code_mask:   True when the decoder runs in image-code mode (image infilling, text-to-image).
    constraint:  optional per-task constraint name ("trie", "bins", "codes") used for constrained loss.
    meta:        anything evaluation needs (references, gold box in pixels, resize ratios, answers …);
                 ``meta["reference"]`` is the metric's ground truth (see the module doc).
    decoder_prompt: the given (not predicted) head of ``prev_output``, starting with BOS (see the module doc);
                 empty means ``[BOS]``.
    """

    id: str
    task: str
    source: list[int]
    prev_output: list[int]
    target: list[int]
    image: Any = None  # torch.Tensor, images.PendingImage (loaders only) or None
    weight: float = 1.0
    code_mask: bool = False
    constraint: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    decoder_prompt: list[int] = field(default_factory=list)


def _merged_class_dict(cls: type, attr: str) -> dict:
    out: dict = {}
    for klass in reversed(cls.__mro__):
        out.update(klass.__dict__.get(attr, {}) or {})
    return out


class Task(SampleAccess):
    """Base class. Subclasses declare what the task knows (class attributes below), implement the hooks and
    register with ``@register_task`` (:mod:`.registry`)."""

    name: ClassVar[str] = "task"
    #: the instruction per language (``{}``: where the sample's text goes); the ``language`` option picks one
    prompts: ClassVar[Mapping[str, str]] = {}
    #: shard JSON fields whose text this task reads (a tokenizer trained on the mixture learns them)
    text_fields: ClassVar[tuple[str, ...]] = ()
    #: metrics (names in ``ofa_lightning.metrics.METRICS``) this task can feed
    metrics: ClassVar[tuple[str, ...]] = ()
    #: the task's decoding settings (``GenerationConfig`` fields), registered as the generation preset ``name``
    decoding: ClassVar[Mapping[str, Any] | None] = None
    #: further named decoding settings (e.g. ``caption_huge``), registered as generation presets
    decoding_presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    #: "image-text" examples form OFA's pre-training group v1 (patch sampling applies), others v2
    group: ClassVar[str] = IMAGE_TEXT_GROUP
    #: how evaluation decodes (see the module doc)
    inference: ClassVar[str] = "generate"
    #: option defaults (merged with those of the base classes)
    defaults: ClassVar[dict[str, Any]] = {
        "strict": False,  # raise BadSampleError instead of counting a skip
        "max_text_chars": 20000,  # a text field longer than this is a skip ("text too long")
        "max_source_tokens": 1024,  # encoder tokens incl. BOS/EOS (OFA's max_source_positions)
        "max_target_tokens": 1025,  # decoder input incl. BOS: 1024 image codes + BOS must fit
        "weight": None,  # per-example loss weight; None = the task's default_weight
        "generation": None,  # GenerationConfig field overrides (a "preset" key swaps the base preset)
        # picks the instruction of ``prompts``; None: the tokenizer's language ("zh" for OFA-CN's vocabulary) when the
        # task has an instruction in it, else "en" (OFA-CN runs the other tasks with their English instructions)
        "language": None,
    }
    #: per-mode overrides of ``defaults`` for tasks with a ``mode`` option
    mode_defaults: ClassVar[dict[str, dict[str, Any]]] = {}
    #: loss weight when the ``weight`` option is None (OFA: 1.0 image-text rows, 2.0 v2 rows)
    default_weight: ClassVar[float] = 1.0

    def __init__(self, tokenizer, **options: Any):
        self.tokenizer = tokenizer
        self.options = dict(options)
        defaults = _merged_class_dict(type(self), "defaults")
        unknown = sorted(set(options) - set(defaults))
        if unknown:
            raise ValueError(
                f"unknown option(s) {unknown} for task {type(self).name!r}; known: {', '.join(sorted(defaults))}"
            )
        cfg = dict(defaults)
        mode = options.get("mode", defaults.get("mode"))
        if self.mode_defaults and mode is not None:
            if mode not in self.mode_defaults:
                raise ValueError(
                    f"task {type(self).name!r}: mode must be one of {sorted(self.mode_defaults)}, got {mode!r}"
                )
            cfg.update(self.mode_defaults[mode])
        cfg.update(options)
        self.cfg: dict[str, Any] = cfg
        self.strict: bool = bool(cfg["strict"])
        self.skips: Counter = Counter()
        self.candidates: list[str] | None = None
        self._candidate_seqs: list[list[int]] | None = None
        self._trie = None
        if cfg["language"] is None:
            language = getattr(tokenizer, "language", "en")
            cfg["language"] = language if language in self.prompts else "en"
        if self.prompts and cfg["language"] not in self.prompts:
            raise ValueError(
                f"task {type(self).name!r} has no {cfg['language']!r} instruction; languages: {sorted(self.prompts)}"
            )

    @property
    def prompt(self) -> str:
        """The instruction of the ``language`` option (``{slot}`` where the sample's text goes)."""
        return self.prompts[self.cfg["language"]]

    def instruction(self, text: str | None = None) -> str:
        """The encoder instruction for a user's ``text`` as this task writes it (API, ``ofa-predict``, serving):
        the prompt with its one slot filled, or the prompt itself (a given ``text`` replaces a slot-free one)."""
        prompt = self.prompt if self.prompts else "{text}"
        slots = string.Formatter().parse(prompt)
        names = [name for _, name, _, _ in slots if name is not None]
        if not names:
            return text or prompt
        return prompt.format(**{names[0]: (text or "").strip()})

    # -- the contract --------------------------------------------------------------------------------------------
    def build_example(
        self, sample: dict[str, Any], image: Image.Image | None, train: bool, rng: random.Random
    ) -> Example | None:
        """Raw shard sample (its json fields) + decoded PIL image → Example; None = counted skip."""
        try:
            if not isinstance(sample, Mapping):
                raise SkipSample("bad type", "sample", f"expected a dict, got {type(sample).__name__}")
            return self._build(sample, image, train, rng)
        except SkipSample as skip:
            self.skips[skip.key] += 1
            if self.strict:
                sid = sample.get("id", "?") if isinstance(sample, Mapping) else "?"
                raise BadSampleError(self.name, str(sid), skip) from None
            return None

    def _build(self, sample: Mapping[str, Any], image: Image.Image | None, train: bool, rng: random.Random) -> Example:
        raise NotImplementedError

    def generation_config(self):
        """The task's decoding settings (an ``ofa_lightning.generation.GenerationConfig``): :attr:`decoding`, then
        the user's ``generation`` option."""
        return self.decoding_config()

    def decoding_config(self, **changes: Any):
        """:attr:`decoding` with ``changes``, then the user's ``generation`` option."""
        return self.make_generation_config(None, **{**(self.decoding or {}), **changes})

    def parse_prediction(self, tokens: list[int], example: Example) -> Any:
        """Generated token ids (no BOS/EOS) → the task's prediction (caption str, answer, box …)."""
        raise NotImplementedError

    def row_score(self, prediction: Any, reference: Any) -> float | None:
        """A per-row indicator for prediction tables (not the task metric); default
        :func:`~ofa_lightning.tasks.scoring.row_score`: VQA soft score, box IoU or exact match."""
        return row_score(prediction, reference)

    def make_generation_config(self, preset: str | None = None, **fields: Any):
        """``GenerationConfig.preset(preset, **fields)`` (or ``GenerationConfig(**fields)`` without a preset),
        then the user's ``generation`` option on top (its ``preset`` key replaces the base preset)."""
        from ofa_lightning.generation import GenerationConfig

        overrides = dict(fields)
        user = dict(self.cfg.get("generation") or {})
        preset = user.pop("preset", preset)
        overrides.update(user)
        if preset is None:
            return GenerationConfig(**overrides)
        return GenerationConfig.preset(preset, **overrides)

    # -- candidates -------------------------------------------------------------------------------------------------
    def set_candidates(self, candidates: Sequence[str] | str | None) -> None:
        """Sets the closed answer set (list, or a file: see :func:`load_string_list`)."""
        cands = load_string_list(candidates, f"{self.name} candidates")
        if cands is not None:
            cands = list(dict.fromkeys(c.strip() for c in cands if c.strip()))
            if not cands:
                raise ValueError(f"{self.name}: the candidate list is empty")
        self.candidates = cands
        self._candidate_seqs = None
        self._trie = None

    def candidate_sequences(self) -> list[list[int]] | None:
        """Token sequences of the candidates: ``BPE(" " + answer) + [EOS]`` (OFA's trie entries, without BOS)."""
        if self.candidates is None:
            return None
        if self._candidate_seqs is None:
            eos = self.tokenizer.eos_id
            self._candidate_seqs = [
                ids + [eos] for ids in self.tokenizer.encode_batch([f" {c}" for c in self.candidates])
            ]
        return self._candidate_seqs

    def constraint_trie(self):
        """``ofa_lightning.generation.Trie`` over :meth:`candidate_sequences` (None without candidates)."""
        seqs = self.candidate_sequences()
        if seqs is None:
            return None
        if self._trie is None:
            from ofa_lightning.generation import Trie

            self._trie = Trie(seqs, eos=self.tokenizer.eos_id)
        return self._trie

    # -- token helpers -----------------------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """BPE ids of ``text`` (literal ``<bin_i>``/``<code_i>``/``<mask>`` become single ids), no BOS/EOS.
        Text the tokenizer rejects (e.g. a literal ``<bin_5000>`` beyond the vocabulary) is a skip."""
        try:
            return self.tokenizer.encode(text)
        except ValueError as exc:
            raise SkipSample("bad text", None, str(exc)) from None

    def wrap_source(self, ids: Sequence[int]) -> list[int]:
        return [self.tokenizer.bos_id, *ids, self.tokenizer.eos_id]

    def teacher_forcing(
        self, source: list[int], answer: Sequence[int], prompt_type: str = "none"
    ) -> tuple[list[int], list[int], list[int]]:
        """``(prev_output, target, decoder_prompt)`` for OFA's three ``prompt_type`` values.

        decoder_prompt = ``[BOS]`` (``none``), ``source[:-1]`` (``prev_output``: BOS + question, no EOS) or
        ``source`` (``src``); ``prev_output = decoder_prompt + answer``; ``target = prev_output[1:] + [EOS]``
        with the prompt positions set to PAD, so the loss covers ``answer + [EOS]`` only.
        """
        bos, eos, pad = self.tokenizer.bos_id, self.tokenizer.eos_id, self.tokenizer.pad_id
        if prompt_type == "none":
            prompt = [bos]
        elif prompt_type == "prev_output":
            prompt = list(source[:-1])
        elif prompt_type == "src":
            prompt = list(source)
        else:
            raise ValueError(f"prompt_type must be 'none', 'prev_output' or 'src', got {prompt_type!r}")
        prev = prompt + list(answer)
        target = prev[1:] + [eos]
        target[: len(prompt) - 1] = [pad] * (len(prompt) - 1)
        return prev, target, prompt

    @property
    def weight(self) -> float:
        w = self.cfg.get("weight")
        return float(self.default_weight if w is None else w)

    def make_example(
        self, sample: Mapping[str, Any], source: list[int], prev_output: list[int], target: list[int], **kwargs: Any
    ) -> Example:
        """Builds the Example with this task's name, id and weight, checking the length limits."""
        if len(source) > int(self.cfg["max_source_tokens"]):
            raise SkipSample("source too long", None, f"{len(source)} > {self.cfg['max_source_tokens']} tokens")
        if len(prev_output) > int(self.cfg["max_target_tokens"]):
            raise SkipSample("target too long", None, f"{len(prev_output)} > {self.cfg['max_target_tokens']} tokens")
        kwargs.setdefault("weight", self.weight)
        kwargs.setdefault("decoder_prompt", [self.tokenizer.bos_id])
        return Example(
            id=self.sample_id(sample),
            task=self.name,
            source=list(source),
            prev_output=list(prev_output),
            target=list(target),
            **kwargs,
        )

    def seq2seq_example(
        self,
        sample: Mapping[str, Any],
        prompt: str | list[int],
        answer: str | list[int],
        prompt_type: str = "none",
        **kwargs: Any,
    ) -> Example:
        """Plain OFA example: source ``[BOS] + prompt + [EOS]``, prev_output ``[BOS] + answer``, target
        ``answer + [EOS]``. ``prompt``/``answer`` are strings (encoded) or token lists. ``prompt_type``: see
        :meth:`teacher_forcing` (``prev_output`` also gives the decoder the source as a prefix)."""
        src = self.encode(prompt) if isinstance(prompt, str) else list(prompt)
        ans = self.encode(answer) if isinstance(answer, str) else list(answer)
        source = self.wrap_source(src)
        prev, target, prompt_ids = self.teacher_forcing(source, ans, prompt_type)
        return self.make_example(sample, source, prev, target, decoder_prompt=prompt_ids, **kwargs)

    def decode_text(self, tokens: Sequence[int]) -> str:
        """Generated ids → text, stopping at the first EOS, specials dropped, stripped."""
        ids = _until_eos(tokens, self.tokenizer.eos_id)
        return self.tokenizer.decode(ids).strip()


def _until_eos(tokens: Sequence[int], eos: int) -> list[int]:
    ids = tokens.tolist() if hasattr(tokens, "tolist") else list(tokens)
    ids = [int(t) for t in ids]
    return ids[: ids.index(eos)] if eos in ids else ids
