"""A task declared entirely in YAML: an instruction template with typed slots filled from the sample.

Example (``conf/task/shapes_count_template.yaml``)::

    name: template
    task_name: shapes_count
    source: "[IMAGE:image] how many shapes are in the image?"
    target: "[TEXT:count]"
    candidates: ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
    metrics: [accuracy]

Grammar
-------
``source`` and ``target`` are literal text with slots ``[KIND:field|modifier|modifier=value...]``:

``[IMAGE:field]``
    The sample's image is the encoder image (``field`` is documentation; the pipeline decodes the image). At
    most one, in ``source`` only; renders as nothing. Without it the task is text-only.
``[TEXT:field]``
    A string (or a number) field, or a list of strings — training picks one with the rng, evaluation the first;
    several references to the same field within one example share the pick. Cleaned like OFA's
    ``pre_caption`` and cut to ``max_src_words`` (source) / ``max_tgt_words`` (target) words. Modifiers:
    ``nopunct`` — the caption fine-tuning cleaning instead (all punctuation removed, lower-cased);
    ``question`` — OFA's ``pre_question``; ``qmark`` — append ``?`` when missing; ``raw`` — no cleaning
    (whitespace collapsed only); ``words=N`` — word limit.
``[BOX:field]``
    ``[x0, y0, x1, y1]`` in pixels of the original image (needs ``[IMAGE]``); validated against the image,
    moved by the image pipeline, rendered as 4 ``<bin_i>`` tokens (``round(c / max_image_size · (bins - 1))``).
``[CODES:field]``
    A list of VQGAN code numbers rendered as ``<code_i>`` tokens; ``n=N`` requires exactly N. In the target
    it switches the decoder to code mode (``code_mask``).

``field`` is a key of the sample's JSON; dots walk nested dicts/lists (``refs.0``). Text outside slots is
copied verbatim (literal ``<bin_i>``/``<code_i>``/``<mask>`` included). After filling, a string that does not
start with whitespace or a literal token gets one leading space (OFA's convention: ``" what does ..."``,
``" {caption}"``). Sequences are built like OFA's: source ``[BOS] + source + [EOS]``; with
``prompt_type: none`` (default) decoder input ``[BOS] + target``, target ``target + [EOS]``; with
``prev_output`` the source (minus EOS) is the decoder prompt and only the target carries loss (VQA-style).

Other options: ``task_name`` (the name examples and metrics carry), ``mode``/``image_size``/
``normalization``/``sample_patch_num`` (image pipeline as the built-in image tasks), ``max_image_size`` (512),
``candidates`` + ``inference: candidates`` (closed answer set, all-candidate evaluation), ``constraint``,
``metrics`` (names in ``ofa_lightning.metrics.METRICS``), ``group``, ``weight``, ``generation`` (decoding
fields; ``preset`` picks an OFA preset).

``meta["reference"]`` is the value of the target's first slot (all references of a list field, cleaned
without the word limit; a box in original pixels; the codes), and the prediction is parsed the same way: a box
for a target that is one ``[BOX]`` slot, codes for ``[CODES]``, else the decoded text (punctuation stripped
with ``nopunct``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ofa_lightning.generation import GenerationConfig
from ofa_lightning.images import Compose, ObjectCenterCrop, RandomResize, ToTensor
from ofa_lightning.tokenizer import box_to_tokens

from .base import IMAGE_TEXT_GROUP, INFERENCE_MODES, OTHER_GROUP, Example, SkipSample
from .common import PRETRAIN_MAX_SIZE, ImageTask, pick_one, pretrain_scales
from .grounding import parse_box_tokens
from .image_infilling import check_codes, parse_codes
from .registry import register_task
from .text import clean_caption, pre_caption, pre_question, remove_punctuation, truncate_words

__all__ = ["TemplateTask", "Slot", "parse_template"]

SLOT_KINDS = ("IMAGE", "TEXT", "BOX", "CODES")
_SLOT_RE = re.compile(r"\[(IMAGE|TEXT|BOX|CODES)(?::([^\]|]*))?((?:\|[^\]|]*)*)\]")
_LEADING_LITERAL = re.compile(r"^(<(bin|code)_[0-9]+>|<mask>)")
_TEXT_MODIFIERS = {"nopunct", "question", "qmark", "raw", "words"}
_CODES_MODIFIERS = {"n"}


@dataclass
class Slot:
    kind: str
    field: str
    modifiers: dict[str, str | None] = field(default_factory=dict)
    span: tuple[int, int] = (0, 0)


def parse_template(text: str, where: str) -> list[Slot]:
    """The slots of a template string (validating kinds and modifiers)."""
    if not isinstance(text, str):
        raise ValueError(f"template {where} must be a string, got {type(text).__name__}")
    slots = []
    for m in _SLOT_RE.finditer(text):
        kind, name, mods = m.group(1), (m.group(2) or "").strip(), m.group(3)
        if not name:
            if kind != "IMAGE":
                raise ValueError(f"template {where}: slot {m.group(0)!r} needs a field name ([{kind}:field])")
            name = "image"
        modifiers: dict[str, str | None] = {}
        for part in filter(None, (p.strip() for p in mods.split("|"))):
            key, _, value = part.partition("=")
            modifiers[key.strip()] = value.strip() if _ else None
        allowed = {"TEXT": _TEXT_MODIFIERS, "CODES": _CODES_MODIFIERS}.get(kind, set())
        unknown = sorted(set(modifiers) - allowed)
        if unknown:
            raise ValueError(
                f"template {where}: unknown modifier(s) {unknown} in {m.group(0)!r}; "
                f"{kind} takes {sorted(allowed) or 'none'}"
            )
        for key in ("words", "n"):
            if key in modifiers and not (modifiers[key] or "").isdigit():
                raise ValueError(f"template {where}: {key}= needs an integer in {m.group(0)!r}")
        slots.append(Slot(kind, name, modifiers, m.span()))
    leftover = re.sub(_SLOT_RE, "", text)
    bad = re.search(r"\[(IMAGE|TEXT|BOX|CODES)\b[^\]]*\]?", leftover)
    if bad:
        raise ValueError(f"template {where}: malformed slot near {bad.group(0)!r}")
    return slots


@register_task
class TemplateTask(ImageTask):
    """See the module doc. ``name`` is ``template``; instances carry their ``task_name``."""

    name = "template"
    defaults = {
        "source": None,
        "target": None,
        "task_name": "template",
        "prompt_type": "none",
        "max_src_words": 80,
        "max_tgt_words": 30,
        "max_image_size": 512,
        "candidates": None,
        "inference": None,  # default: "candidates" with candidates, else "generate"
        "constraint": None,  # default: "trie" with candidates, "codes" for a codes target
        "metrics": None,
        "group": None,  # default: image-text with an [IMAGE] slot, else other
    }

    def __init__(self, tokenizer, **options: Any):
        super().__init__(tokenizer, **options)
        cfg = self.cfg
        if cfg["source"] is None or cfg["target"] is None:
            raise ValueError("template task needs both 'source' and 'target' templates")
        self.source_slots = parse_template(cfg["source"], "source")
        self.target_slots = parse_template(cfg["target"], "target")
        if any(s.kind == "IMAGE" for s in self.target_slots):
            raise ValueError("template target: [IMAGE] may only appear in the source")
        if sum(s.kind == "IMAGE" for s in self.source_slots) > 1:
            raise ValueError("template source: at most one [IMAGE] slot")
        self.uses_image = any(s.kind == "IMAGE" for s in self.source_slots)
        self.box_slots = [s for s in self.source_slots + self.target_slots if s.kind == "BOX"]
        if self.box_slots and not self.uses_image:
            raise ValueError("template: [BOX] slots need an [IMAGE] slot in the source")
        if cfg["prompt_type"] not in ("none", "prev_output", "src"):
            raise ValueError(f"template: prompt_type must be none, prev_output or src, got {cfg['prompt_type']!r}")
        self.name = str(cfg["task_name"])
        self.metrics = tuple(cfg["metrics"] or ())
        self.group = cfg["group"] or (IMAGE_TEXT_GROUP if self.uses_image else OTHER_GROUP)
        if self.group not in (IMAGE_TEXT_GROUP, OTHER_GROUP):
            raise ValueError(f"template: group must be {IMAGE_TEXT_GROUP!r} or {OTHER_GROUP!r}")
        self.set_candidates(cfg["candidates"])
        self.inference = cfg["inference"] or ("candidates" if self.candidates is not None else "generate")
        if self.inference not in INFERENCE_MODES or self.inference == "last_token":
            raise ValueError("template: inference must be 'generate' or 'candidates'")
        if self.inference == "candidates" and self.candidates is None:
            raise ValueError("template: inference 'candidates' needs a candidates list")
        self.code_target = any(s.kind == "CODES" for s in self.target_slots)
        self.constraint = cfg["constraint"] or (
            "trie" if self.candidates is not None else "codes" if self.code_target else None
        )

    # -- image pipeline --------------------------------------------------------------------------------------------
    def build_transform(self, train: bool) -> Compose:
        if self.box_slots and self.cfg["mode"] == "pretrain" and train:
            size = int(self.cfg["image_size"])
            return Compose(
                [
                    RandomResize(pretrain_scales(size), max_size=PRETRAIN_MAX_SIZE),
                    ObjectCenterCrop(size),
                    ToTensor(),
                    self.normalize(),
                ]
            )
        return super().build_transform(train)

    # -- rendering -------------------------------------------------------------------------------------------------
    def _clean_text(self, value: str, slot: Slot, default_words: int | None) -> str:
        mods = slot.modifiers
        words = int(mods["words"]) if mods.get("words") else default_words
        if "raw" in mods:
            text = truncate_words(value, words)
        elif "nopunct" in mods:
            text = clean_caption(value, words)
        elif "question" in mods:
            text = pre_question(value, words)
        else:
            text = pre_caption(value, words)
        if "qmark" in mods and not text.endswith("?"):
            text += "?"
        return text

    def _text_value(self, sample, slot: Slot, train, rng, picks: dict) -> tuple[str, list[str] | None]:
        """(picked raw text, all raw texts for a list field else None) of a TEXT slot's field."""
        if slot.field not in picks:
            value = self.field(sample, slot.field, (str, int, float, list, tuple))
            if isinstance(value, (list, tuple)):
                items = self.text_list(sample, slot.field)
                picks[slot.field] = (pick_one(items, train, rng), items)
            else:
                picks[slot.field] = (self.check_text(str(value), slot.field), None)
        return picks[slot.field]

    def _render(self, template: str, slots: list[Slot], values: dict[int, str]) -> str:
        out, pos = [], 0
        for i, slot in enumerate(slots):
            out.append(template[pos : slot.span[0]])
            out.append(values.get(i, ""))
            pos = slot.span[1]
        out.append(template[pos:])
        text = "".join(out)
        if text and not text[0].isspace() and not _LEADING_LITERAL.match(text):
            text = " " + text
        return text

    def _fill(self, sample, template, slots, side, train, rng, picks, boxes) -> tuple[str, dict[int, Any]]:
        default_words = self.cfg["max_src_words"] if side == "source" else self.cfg["max_tgt_words"]
        values: dict[int, str] = {}
        refs: dict[int, Any] = {}
        for i, slot in enumerate(slots):
            if slot.kind == "IMAGE":
                continue
            if slot.kind == "TEXT":
                chosen, items = self._text_value(sample, slot, train, rng, picks)
                text = self._clean_text(chosen, slot, default_words)
                if not text.strip():
                    raise SkipSample("empty text", slot.field, "nothing left after cleaning")
                values[i] = text
                nolimit = Slot(slot.kind, slot.field, {k: v for k, v in slot.modifiers.items() if k != "words"})
                refs[i] = (
                    self._clean_text(chosen, nolimit, None)
                    if items is None
                    else [self._clean_text(t, nolimit, None) for t in items]
                )
            elif slot.kind == "BOX":
                transformed, original = boxes[slot.field]
                values[i] = box_to_tokens(transformed, float(self.cfg["max_image_size"]), self.tokenizer.num_bins)
                refs[i] = original
            elif slot.kind == "CODES":
                n = int(slot.modifiers["n"]) if slot.modifiers.get("n") else None
                codes = check_codes(self, sample, slot.field, n)
                values[i] = " ".join(f"<code_{c}>" for c in codes)
                refs[i] = codes
        return self._render(template, slots, values), refs

    def _build(self, sample, image, train, rng) -> Example:
        tensor, target_info, boxes = None, None, {}
        if self.uses_image:
            img = self.require_image(image)
            names = list(dict.fromkeys(s.field for s in self.box_slots))
            originals = [self.check_box(self.field(sample, n), n, img.width, img.height) for n in names]
            tensor, target_info = self.transform(img, train, rng, {"boxes": originals} if names else None)
            if names and len(target_info["boxes"]) != len(names):
                raise SkipSample("box lost in crop", names[0])
            for k, n in enumerate(names):
                boxes[n] = (target_info["boxes"][k].tolist(), originals[k])
        picks: dict = {}
        source_text, _ = self._fill(sample, self.cfg["source"], self.source_slots, "source", train, rng, picks, boxes)
        target_text, refs = self._fill(
            sample, self.cfg["target"], self.target_slots, "target", train, rng, picks, boxes
        )
        source = self.wrap_source(self.encode(source_text))
        answer = self.encode(target_text)
        prev, target, prompt = self.teacher_forcing(source, answer, self.cfg["prompt_type"])
        meta: dict[str, Any] = {}
        if refs:
            meta["reference"] = refs[min(refs)]
        if target_info is not None:
            meta.update(w_ratio=target_info["w_ratio"], h_ratio=target_info["h_ratio"])
        return self.make_example(
            sample,
            source,
            prev,
            target,
            image=tensor,
            code_mask=self.code_target,
            constraint=self.constraint,
            meta=meta,
            decoder_prompt=prompt,
        )

    # -- evaluation ------------------------------------------------------------------------------------------------
    def generation_config(self) -> GenerationConfig:
        if self.code_target:
            return self.make_generation_config(None, constraint_range=self.tokenizer.code_range, gen_code=True)
        return self.make_generation_config(None)

    def parse_prediction(self, tokens, example: Example | None = None) -> Any:
        slots = self.target_slots
        if len(slots) == 1 and slots[0].kind == "BOX":
            meta = example.meta if example is not None else {}
            return parse_box_tokens(self, tokens, meta.get("w_ratio", 1.0), meta.get("h_ratio", 1.0))
        if self.code_target:
            return parse_codes(self, tokens)
        text = self.decode_text(tokens)
        if any("nopunct" in s.modifiers for s in slots):
            text = remove_punctuation(text).strip()
        return text
