"""The inference façade (used by ``ofa-predict`` and the notebooks): load a checkpoint, ``generate(image, prompt)``.

Checkpoints: our Lightning ``.ckpt``, a file written by ``ofa-convert``, or an OFA fairseq / HF ``.pt`` (these two
need OFA's BPE files as ``tokenizer=``).

An ``ofa-train`` checkpoint carries its model card (``training/model_card.py``): the tokenizer and every task of the
run as it was trained (image size, bins, ``prompt_type``, the closed answer set, decoding settings); a checkpoint
written before the card existed is read through its run dir (``config_resolved.yaml``, ``tokenizer/``).
``generate(image, prompt, task)`` builds the input with that task object and decodes it with the evaluation's own
code (``training/validation.py``: beam search, trie, all-candidate scoring, the task's ``parse_prediction``), so
it answers what ``ofa-eval`` answers for the same image and instruction. Where no task of that name was trained (a
converted checkpoint, or another task), OFA's task with its defaults is used (``prompt_types`` and ``image_size``
given to :meth:`OFA.load` on top); a preset name that is no task (e.g. ``vqa_zero_shot``) decodes with that preset.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ofa_lightning.generation import GenerationConfig, generate
from ofa_lightning.images import Compose, Normalize, SquashResize, ToTensor
from ofa_lightning.model import OFAConfig, OFAModel
from ofa_lightning.speed import apply_speed
from ofa_lightning.tasks import ALIASES, TASKS, build_task
from ofa_lightning.tasks.base import Example
from ofa_lightning.tokenizer import OFATokenizer

#: OFA's English instructions, as the registered tasks declare them (``{slot}`` where the user's text goes)
PROMPTS = {name: cls.prompts["en"] for name, cls in TASKS.items() if "en" in cls.prompts}
__all__ = ["OFA", "Prediction", "PROMPTS"]


@dataclass
class Prediction:
    text: str
    tokens: list[int]
    box: list[float] | None = None  # pixels of the input image, when the output is 4 location bins
    score: float | None = None  # the hypothesis' score (preset decoding only)


class OFA:
    """A model + tokenizer pair ready for prompts, with the tasks it was trained on (``tasks``: {name: Task})."""

    def __init__(
        self,
        model: OFAModel,
        tokenizer: OFATokenizer,
        image_size: int | None = None,
        device: str | torch.device = "cpu",
        prompt_types: dict[str, str] | None = None,
        tasks: dict[str, Any] | None = None,
        speed: Any = None,
    ):
        if model.config.vocab_size != tokenizer.vocab_size:
            raise ValueError(
                f"model vocabulary {model.config.vocab_size} != tokenizer vocabulary "
                f"{tokenizer.vocab_size}: wrong tokenizer for this checkpoint"
            )
        # the fast paths (ofa_lightning.speed): ``speed`` if given, else the model's own, else the default profile
        self.model = (
            apply_speed(model, speed if speed is not None else getattr(model, "speed_config", None)).to(device).eval()
        )
        self.tokenizer = tokenizer
        #: input size for every image task (None: each task's own, as trained)
        self.image_size = image_size
        self.device = torch.device(device)
        #: the trained tasks by mixture source name (from the checkpoint's model card)
        self.tasks: dict[str, Any] = dict(tasks or {})
        given = dict(prompt_types or {})
        for task in self.tasks.values():
            if "prompt_type" in task.options:
                given.setdefault(type(task).name, str(task.options["prompt_type"]))
        #: task -> OFA prompt_type the model was trained with, where the run set one
        self.prompt_types = given
        self._defaults: dict[str, Any] = {}

    # ---------------------------------------------------------------------------------------------- loading
    @classmethod
    def load(
        cls,
        checkpoint: str | Path,
        tokenizer: str | Path | OFATokenizer | None = None,
        image_size: int | None = None,
        device: str = "cpu",
        trust_checkpoint: bool = False,
        prompt_types: dict[str, str] | None = None,
        tasks: dict[str, Any] | None = None,
        base: str | Path | None = None,
    ) -> OFA:
        """Our checkpoints bring their tokenizer, tasks and image sizes (the model card); ``tokenizer`` /
        ``image_size`` replace them when given. Converted and OFA checkpoints do not say how their model was
        trained: ``prompt_types`` (task -> OFA ``prompt_type``, e.g. ``{"grounding": "prev_output"}``) adjusts OFA's
        task defaults, and ``tasks`` ({name: Task}, e.g. ``OFA.load(original).tasks`` for its converted copy) gives
        the tasks themselves. A LoRA adapter checkpoint is applied (merged) on top of the base weights it records;
        ``base`` names that file when it has moved."""
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        from ofa_lightning.weights.convert import load_checkpoint_file

        card = None
        safetensors = path.suffix == ".safetensors"  # ofa-export: tensors + JSON metadata, nothing to unpickle
        # weights_only=True with the allow-list OFA's fairseq checkpoints need (their argparse args)
        data = {} if safetensors else load_checkpoint_file(path, trust_checkpoint=trust_checkpoint)
        if safetensors:
            from ofa_lightning.export.safetensors_checkpoint import load_safetensors_checkpoint
            from ofa_lightning.training.model_card import CARD_KEY, read_model_card

            model, card_data = load_safetensors_checkpoint(path)
            if card_data:
                card = read_model_card({CARD_KEY: card_data}, path)
                tokenizer = card.tokenizer() if tokenizer is None else tokenizer
        elif "hyper_parameters" in data and "state_dict" in data:  # our Lightning checkpoint
            from ofa_lightning.training.model_card import read_model_card
            from ofa_lightning.training.peft import ADAPTER_KEY, load_adapted_model

            if ADAPTER_KEY in data:  # a LoRA run: on top of its base weights (``base`` replaces the recorded path)
                model = load_adapted_model(data, base=base)
            else:
                model = OFAModel(OFAConfig.from_saved(data["hyper_parameters"]["model_config"]))
                state = {k[len("model.") :]: v for k, v in data["state_dict"].items() if k.startswith("model.")}
                model.load_state_dict(state)
            card = read_model_card(data, path)
            if tokenizer is None:
                tokenizer = card.tokenizer()
        elif "model_config" in data:  # written by ofa-convert
            from ofa_lightning.weights.convert import load_converted

            model = load_converted(path)
        else:  # OFA fairseq checkpoint or HF/ModelScope state dict
            from ofa_lightning.weights.convert import fairseq_state_dict, from_state_dict

            model, _ = from_state_dict(fairseq_state_dict(data))
        if tokenizer is None:
            raise ValueError(
                f"{path} carries no tokenizer: pass tokenizer= (ofa-predict / ofa-serve: tokenizer_path=), OFA's "
                "BPE folder or a saved tokenizer"
            )
        if not isinstance(tokenizer, OFATokenizer):
            tdir = Path(tokenizer)
            tokenizer = (
                OFATokenizer.load(tdir) if (tdir / "ofa_tokenizer.json").exists() else OFATokenizer.from_ofa_files(tdir)
            )
        if tasks is None:
            tasks = card.tasks(tokenizer) if card is not None else {}
        return cls(model, tokenizer, image_size, device, prompt_types=prompt_types, tasks=tasks)

    # ---------------------------------------------------------------------------------------------- tasks
    def task(self, name: str):
        """The task ``name`` (a mixture source or task name, or an alias such as ``refcoco``) as the model was
        trained on it; else OFA's task with its defaults; None when ``name`` is no task (a decoding preset)."""
        if name in self.tasks:
            return self._sized(self.tasks[name])
        canonical = ALIASES.get(name, name)
        for task in self.tasks.values():
            if type(task).name == canonical:
                return self._sized(task)
        if canonical not in TASKS or canonical == "template":
            return None
        if canonical not in self._defaults:
            options: dict[str, Any] = {}
            if canonical in self.prompt_types:
                options["prompt_type"] = self.prompt_types[canonical]
            task = build_task(canonical, self.tokenizer, **options)
            if self.image_size and "image_size" in task.cfg:
                options["image_size"] = self.image_size
                if "max_image_size" in task.cfg:  # bins span the input image, as OFA's 512 px boxes over 512 px
                    options["max_image_size"] = self.image_size
                task = build_task(canonical, self.tokenizer, **options)
            self._defaults[canonical] = task
        return self._defaults[canonical]

    def _sized(self, task):
        """A trained task, with ``image_size`` in its options when this façade was given one."""
        if not self.image_size or int(task.cfg.get("image_size") or 0) in (0, int(self.image_size)):
            return task
        key = f"{id(task)}@{self.image_size}"
        if key not in self._defaults:
            sized = copy.copy(task)
            sized.cfg = {**task.cfg, "image_size": int(self.image_size)}
            sized._transforms = {}
            self._defaults[key] = sized
        return self._defaults[key]

    # ------------------------------------------------------------------------------------------- inference
    def prepare_image(self, image: Image.Image | str | Path, size: int) -> tuple[torch.Tensor, float, float]:
        """OFA's fine-tuning squash to ``size`` px, normalised; returns the tensor and the resize ratios."""
        image = _rgb(image)
        pipeline = Compose([SquashResize(size), ToTensor(), Normalize.named("ofa")])
        tensor, target = pipeline(image, {"boxes": torch.zeros(0, 4)})
        return tensor, target.get("w_ratio", size / image.width), target.get("h_ratio", size / image.height)

    def example(self, task, image: Image.Image | str | Path | None, prompt: str):
        """The evaluation ``Example`` of one instruction: the task's image pipeline, the prompt as its source,
        the decoder prompt of its ``prompt_type``."""
        text = prompt if prompt.startswith(" ") else " " + prompt
        source = task.wrap_source(task.encode(text.lower()))
        prompt_type = task.cfg.get("prompt_type", "none")
        prev, target, decoder_prompt = task.teacher_forcing(source, [], prompt_type)
        tensor, meta = None, {}
        if image is not None and hasattr(task, "transform"):
            tensor, info = task.transform(_rgb(image), False, random.Random(0), {"boxes": torch.zeros(0, 4)})
            meta = {k: info[k] for k in ("w_ratio", "h_ratio") if k in info}
        return Example(
            id="prompt",
            task=type(task).name,
            source=source,
            prev_output=prev,
            target=target,
            image=tensor,
            meta=meta,
            decoder_prompt=decoder_prompt,
        )

    @torch.no_grad()
    def generate(
        self, image: Image.Image | str | Path | None, prompt: str, task: str = "caption", **overrides: Any
    ) -> Prediction:
        """Run one instruction as ``task`` (a trained source / task name, another OFA task, or a decoding
        preset such as ``vqa_zero_shot``); ``overrides`` are ``GenerationConfig`` fields."""
        spec = self.task(task)
        if spec is None:
            return self._generate_preset(image, prompt, task, **overrides)
        from ofa_lightning.data.collate import collate_examples
        from ofa_lightning.training.validation import predict_batch

        if overrides:
            spec = copy.copy(spec)
            spec.cfg = {**spec.cfg, "generation": {**(spec.cfg.get("generation") or {}), **overrides}}
        pad = self.tokenizer.pad_id
        batch = collate_examples([self.example(spec, image, prompt)], pad_id=pad)
        batch = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        record = predict_batch(self.model, spec, batch, pad)[0]
        tokens = [t for t in record["tokens"] if t != self.tokenizer.eos_id]
        prediction = record["prediction"]
        if isinstance(prediction, str):
            return Prediction(prediction, tokens)
        box = None
        if isinstance(prediction, (list, tuple)) and len(prediction) == 4 and all(v == v for v in prediction):
            box = [float(v) for v in prediction]
        return Prediction(self.tokenizer.decode(tokens).strip(), tokens, box)

    def _generate_preset(self, image, prompt: str, preset: str, **overrides: Any) -> Prediction:
        """A decoding preset that is no task (``vqa_zero_shot``, ``caption_huge``, ...): the prompt in the encoder,
        the image squashed to ``image_size`` (480 when not given)."""
        config = GenerationConfig.preset(preset, **overrides)
        text = prompt if prompt.startswith(" ") else " " + prompt
        source = torch.tensor([self.tokenizer.encode(text.lower(), add_bos=True, add_eos=True)], device=self.device)
        batch: dict[str, Any] = {"input_ids": source}
        if image is not None:
            pixels, _, _ = self.prepare_image(image, self.image_size or 480)
            batch["patch_images"] = pixels[None].to(self.device)
            batch["patch_masks"] = torch.tensor([True], device=self.device)
        hyp = generate(self.model, batch, config)[0][0]
        tokens = [t for t in hyp.tokens.tolist() if t != self.tokenizer.eos_id]
        return Prediction(self.tokenizer.decode(tokens).strip(), tokens, None, float(hyp.score))

    @torch.no_grad()
    def generate_image(
        self,
        caption: str,
        vq: Any,
        reranker: Any = None,
        num_samples: int = 24,
        top_k: int = 256,
        top_p: float = -1.0,
        temperature: float = 1.0,
        seed: int | None = 42,
    ) -> list[Any]:
        """Text-to-image (OFA's ``tasks/mm_tasks/image_gen.py``): ``num_samples`` code grids sampled (top-k / top-p) from the code range,
        decoded with ``vq`` (a ``VQModel`` or its checkpoint path), reranked by CLIP when ``reranker`` is given (a
        ``ClipReranker`` or a local CLIP folder). Returns ``ImageSample`` s (``.image`` PIL, ``.codes``, ``.score``,
        ``.clip_score``), best first."""
        from ofa_lightning.generation.rerank import ClipReranker, generate_images
        from ofa_lightning.vq import VQModel

        if not isinstance(vq, VQModel):
            vq = VQModel.load(vq)
        vq = vq.to(self.device).eval()
        if vq.n_embed > self.tokenizer.num_codes:
            raise ValueError(f"the VQ model has {vq.n_embed} codes but the tokenizer only {self.tokenizer.num_codes}")
        if reranker is not None and not isinstance(reranker, ClipReranker):
            reranker = ClipReranker.from_pretrained(reranker, device=self.device)
        task = self.task("text_to_image")
        caption = task.caption_text(caption)  # OFA: the caption's first 64 words, lower case
        text = task.instruction(caption)
        source = torch.tensor([self.tokenizer.encode(text, add_bos=True, add_eos=True)], device=self.device)
        return generate_images(
            self.model,
            source,
            vq,
            code_offset=self.tokenizer.code_offset,
            captions=[caption],
            reranker=reranker,
            num_samples=num_samples,
            top_k=top_k,
            top_p=top_p,
            temperature=temperature,
            seed=seed,
        )[0]

    def ask(self, image, task: str, text: str | None = None) -> Prediction:
        """``text`` as the task's evaluation writes it (:meth:`Task.instruction`), decoded as that task."""
        return self.generate(image, self.task(task).instruction(text), task)

    def caption(self, image) -> str:
        return self.ask(image, "caption").text

    def answer(self, image, question: str) -> str:
        """The question as VQA evaluation writes it (OFA's ``pre_question``, ``?`` appended)."""
        return self.ask(image, "vqa", question).text

    def ground(self, image, text: str) -> list[float] | None:
        """The expression as grounding evaluation writes it (OFA's ``pre_caption``, the task's instruction)."""
        return self.ask(image, "grounding", text).box


def _rgb(image: Image.Image | str | Path) -> Image.Image:
    if not isinstance(image, Image.Image):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"image not found: {path}")
        image = Image.open(path)
    return image.convert("RGB")
