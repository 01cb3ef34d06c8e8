"""The model side of ``ofa-serve``: task names → OFA prompts, a batch of same-task requests → answers.

``ServeEngine`` wraps an :class:`~ofa_lightning.api.OFA` façade. ``prompt(task, instruction, image, region)`` writes
the exact instruction the model gets (as ``ofa-eval`` / :meth:`OFA.caption` / :meth:`OFA.answer` /
:meth:`OFA.ground` write it); ``run_batch(task, requests)`` builds each request's evaluation ``Example`` with the
task object (:meth:`OFA.example`), collates them into one batch (``collate_examples``) and decodes it with the
evaluation's own code (``predict_batch``: the KV-cached beam search, trie, candidate scoring, the task's
``parse_prediction``), so a batched answer is the answer ``OFA.generate`` gives for the same request alone.
"""

from __future__ import annotations

import base64
import io
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import torch

from ofa_lightning.errors import UserError

log = logging.getLogger(__name__)

__all__ = ["TASKS", "ServeEngine", "ServeRequest", "ServeResult"]

# page/API task name -> (OFA task used to build and decode it, what the instruction field holds)
TASKS: dict[str, tuple[str, str]] = {
    "caption": ("caption", "optional: OFA's caption instruction when empty"),
    "vqa": ("vqa", "the question"),
    "grounding": ("grounding", "the referring expression"),
    "grounded_caption": ("grounded_caption", "optional; needs region=[x0,y0,x1,y1] in pixels"),
    "image_text_matching": ("image_text_matching", "the caption to match (answer: yes / no)"),
    "text_to_image": ("text_to_image", "the caption to draw (needs vq_path=)"),
    "instruction": ("caption", "any OFA instruction, decoded with the caption task's settings"),
}
IMAGE_FREE = {"text_to_image"}


class BadRequest(UserError):
    """A request the server answers with a 4xx status and this message."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class ServeRequest:
    task: str
    instruction: str
    image: Any = None  # PIL image (RGB) or None
    region: list[float] | None = None  # grounded_caption: [x0, y0, x1, y1] pixels of ``image``
    prompt: str = ""  # filled by ServeEngine.prepare
    example: Any = None  # the model input (tokens + image tensor), made by ServeEngine.prepare off the model thread


@dataclass
class ServeResult:
    text: str
    box: list[float] | None = None
    image_png_base64: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class ServeEngine:
    """One loaded model; ``run_batch`` is called from a single worker thread."""

    def __init__(
        self,
        ofa,
        max_instruction_chars: int = 512,
        vq_path: str | None = None,
        vq_config: str | None = None,
        t2i_samples: int = 4,
    ):
        self.ofa = ofa
        self.max_instruction_chars = int(max_instruction_chars)
        self.t2i_samples = int(t2i_samples)
        self._vq = None
        self._vq_path, self._vq_config = vq_path, vq_config
        self._lock = threading.Lock()

    # -------------------------------------------------------------------------------------------- info
    def trained_tasks(self) -> dict[str, dict[str, Any]]:
        out = {}
        for source, task in self.ofa.tasks.items():
            out[source] = {
                "task": type(task).name,
                "image_size": task.cfg.get("image_size"),
                "prompt_type": task.cfg.get("prompt_type", "none"),
                "answer_set": len(task.candidates) if getattr(task, "candidates", None) else None,
            }
        return out

    def available_tasks(self) -> dict[str, dict[str, Any]]:
        trained = {info["task"] for info in self.trained_tasks().values()}
        out = {}
        for name, (ofa_task, field_help) in TASKS.items():
            usable, reason = True, None
            if name == "text_to_image" and not self.ofa.tokenizer.num_codes:
                usable, reason = False, "the checkpoint's tokenizer has no image codes: it cannot generate images"
            elif name == "text_to_image" and not self._vq_path:
                usable, reason = False, "needs a VQ model: start ofa-serve with vq_path=<VQ checkpoint>"
            out[name] = {
                "trained": ofa_task in trained or name == "instruction" and "caption" in trained,
                "usable": usable,
                "reason": reason,
                "instruction": field_help,
                "default_instruction": self.default_instruction(name),
            }
        return out

    def info(self) -> dict[str, Any]:
        model, tok = self.ofa.model, self.ofa.tokenizer
        config = model.config
        return {
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "model": {
                k: getattr(config, k)
                for k in (
                    "name",
                    "d_model",
                    "encoder_layers",
                    "decoder_layers",
                    "encoder_attention_heads",
                    "resnet_type",
                    "vocab_size",
                )
            },
            "tokenizer": {"vocab_size": tok.vocab_size, "num_bins": tok.num_bins, "num_codes": tok.num_codes},
            "trained_tasks": self.trained_tasks(),
            "image_size": self.ofa.image_size,
            "tasks": self.available_tasks(),
            "device": str(self.ofa.device),
        }

    def default_instruction(self, name: str) -> str:
        if name == "caption":
            return self.ofa.task("caption").prompt.strip()
        return ""

    # ------------------------------------------------------------------------------------------ prompts
    def check(self, task: str, instruction: str | None, has_image: bool, region) -> tuple[str, str | None]:
        """Validate a request: (the instruction, a warning for a task the checkpoint was not trained on)."""
        if task not in TASKS:
            raise BadRequest(f"unknown task '{task}'; choose one of: {', '.join(TASKS)}")
        info = self.available_tasks()[task]
        if not info["usable"]:
            raise BadRequest(f"task '{task}' is not available: {info['reason']}")
        text = " ".join(str(instruction or "").split())
        if len(str(instruction or "")) > self.max_instruction_chars:
            raise BadRequest(
                f"instruction too long: {len(str(instruction))} characters, at most {self.max_instruction_chars}", 413
            )
        if not text and task not in ("caption", "grounded_caption"):
            raise BadRequest(f"empty instruction: task '{task}' needs {TASKS[task][1]}")
        if task not in IMAGE_FREE and not has_image:
            raise BadRequest(f"task '{task}' needs an image (form field 'image' or JSON 'image_base64')")
        if task == "grounded_caption" and region is None:
            raise BadRequest("task 'grounded_caption' needs region=[x0,y0,x1,y1] (pixels of the image)")
        warning = None
        if not info["trained"]:
            warning = (
                f"the checkpoint was not trained on '{TASKS[task][0]}': answered with OFA's default "
                f"settings for it, expect a poor answer"
            )
        return text, warning

    def prepare(self, request: ServeRequest) -> ServeRequest:
        """Fill ``request.prompt``: the exact instruction the model gets."""
        name, text = request.task, request.instruction
        spec = self.ofa.task(TASKS[name][0])
        if name == "grounded_caption":
            from ofa_lightning.tasks.grounded_qa import fill_region

            prompt = fill_region(spec.prompt, list(request.region), request.image, self.ofa.tokenizer.num_bins)
        elif name == "instruction":  # free instruction
            prompt = text
        else:  # the instruction as the task's evaluation writes it
            prompt = spec.instruction(text)
        request.prompt = prompt if prompt.startswith(" ") else " " + prompt
        if name != "text_to_image":  # tokenised and its image resized here, in the request's thread
            request.example = self.ofa.example(spec, request.image, request.prompt)
        return request

    # ----------------------------------------------------------------------------------------- decoding
    @torch.no_grad()
    def run_batch(self, task: str, requests: list[ServeRequest]) -> list[ServeResult]:
        """Answer same-task requests in one forward pass (text-to-image: one request after the other)."""
        with self._lock:
            if task == "text_to_image":
                return [self._text_to_image(r) for r in requests]
            from ofa_lightning.data.collate import collate_examples
            from ofa_lightning.training.validation import predict_batch

            ofa = self.ofa
            spec = ofa.task(TASKS[task][0])
            pad = ofa.tokenizer.pad_id
            examples = [r.example if r.example is not None else ofa.example(spec, r.image, r.prompt) for r in requests]
            batch = collate_examples(examples, pad_id=pad)
            batch = {k: v.to(ofa.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            records = predict_batch(ofa.model, spec, batch, pad)
            results = []
            for record in records:
                tokens = [t for t in record["tokens"] if t != ofa.tokenizer.eos_id]
                prediction = record["prediction"]
                if isinstance(prediction, str) and task != "instruction":
                    results.append(ServeResult(prediction))
                    continue
                box = None
                if isinstance(prediction, (list, tuple)) and len(prediction) == 4 and all(v == v for v in prediction):
                    box = [float(v) for v in prediction]
                results.append(ServeResult(ofa.tokenizer.decode(tokens).strip(), box))
            return results

    def _text_to_image(self, request: ServeRequest) -> ServeResult:
        if self._vq is None:
            from ofa_lightning.vq import VQModel

            self._vq = VQModel.load(self._vq_path, config=self._vq_config)
        caption = request.prompt.split("caption:", 1)[-1].strip()
        samples = self.ofa.generate_image(caption, self._vq, num_samples=self.t2i_samples)
        buffer = io.BytesIO()
        samples[0].image.save(buffer, format="PNG")
        return ServeResult(
            caption, None, base64.b64encode(buffer.getvalue()).decode("ascii"), {"score": samples[0].score}
        )
