"""The inference façade (used by ``ofa-predict`` and the notebooks): load a checkpoint, ``generate(image, prompt)``.

Checkpoints: our Lightning ``.ckpt`` (the tokenizer is read from its run dir's ``tokenizer/``), a file written by
``ofa-convert``, or an OFA fairseq / HF ``.pt`` (these two need OFA's BPE files as ``tokenizer=``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ofa_lightning.data.transforms import Compose, Normalize, SquashResize, ToTensor
from ofa_lightning.generation import GenerationConfig, generate
from ofa_lightning.model import OFAConfig, OFAModel
from ofa_lightning.tokenizer import OFATokenizer

# OFA's instructions (OFA-Sys/OFA ``data/mm_data/*_dataset.py``; leading space, lower case).
PROMPTS = {
    "caption": " what does the image describe?",
    "grounding": ' which region does the text " {text} " describe?',
    "grounded_caption": " what does the region describe? region: {region}",
    "vqa": " {question}",
}
TEXT_TO_IMAGE_PROMPT = " what is the complete image? caption: {}"
# Fine-tuning resolutions (OFA's run_scripts): caption/VQA 480, RefCOCO 512.
IMAGE_SIZE = {"caption": 480, "vqa": 480, "grounding": 512, "grounded_caption": 480}


@dataclass
class Prediction:
    text: str
    tokens: list[int]
    box: list[float] | None = None  # pixels of the input image, when the output is 4 location bins
    score: float | None = None


class OFA:
    """A model + tokenizer pair ready for prompts."""

    def __init__(self, model: OFAModel, tokenizer: OFATokenizer, image_size: int | None = None,
                 device: str | torch.device = "cpu", prompt_types: dict[str, str] | None = None):
        if model.config.vocab_size != tokenizer.vocab_size:
            raise ValueError(f"model vocabulary {model.config.vocab_size} != tokenizer vocabulary "
                             f"{tokenizer.vocab_size}: wrong tokenizer for this checkpoint")
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.device = torch.device(device)
        #: task -> OFA prompt_type the model was trained with ("none" unless its run says otherwise)
        self.prompt_types = dict(prompt_types or {})

    # ---------------------------------------------------------------------------------------------- loading
    @classmethod
    def load(cls, checkpoint: str | Path, tokenizer: str | Path | OFATokenizer | None = None,
             image_size: int | None = None, device: str = "cpu", trust_checkpoint: bool = False,
             prompt_types: dict[str, str] | None = None) -> "OFA":
        """``prompt_types``: task -> OFA ``prompt_type`` the model was trained with (e.g. ``{"grounding":
        "prev_output"}``); read from the run's ``config_resolved.yaml`` for our checkpoints when not given. Converted
        and OFA checkpoints carry none: pass it when the model was trained with a non-default prompt."""
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        data = torch.load(path, map_location="cpu", weights_only=not trust_checkpoint)
        if "hyper_parameters" in data and "state_dict" in data:  # our Lightning checkpoint
            model = OFAModel(OFAConfig(**data["hyper_parameters"]["model_config"]))
            state = {k[len("model."):]: v for k, v in data["state_dict"].items() if k.startswith("model.")}
            model.load_state_dict(state)
            tokenizer = tokenizer or _run_dir_tokenizer(path)
            if prompt_types is None:
                prompt_types = _run_dir_prompt_types(path)
        elif "model_config" in data:  # written by ofa-convert
            from ofa_lightning.model.convert import load_converted

            model = load_converted(path)
        else:  # OFA fairseq checkpoint or HF/ModelScope state dict
            from ofa_lightning.model.convert import fairseq_state_dict, from_state_dict

            model, _ = from_state_dict(fairseq_state_dict(data))
        if tokenizer is None:
            raise ValueError(f"{path} carries no tokenizer: pass tokenizer= (OFA's BPE folder or a saved tokenizer)")
        if not isinstance(tokenizer, OFATokenizer):
            tdir = Path(tokenizer)
            tokenizer = OFATokenizer.load(tdir) if (tdir / "ofa_tokenizer.json").exists() else \
                OFATokenizer.from_ofa_files(tdir)
        return cls(model, tokenizer, image_size, device, prompt_types=prompt_types)

    # ------------------------------------------------------------------------------------------- inference
    def prepare_image(self, image: Image.Image | str | Path, size: int) -> tuple[torch.Tensor, float, float]:
        if not isinstance(image, Image.Image):
            image = Image.open(image)
        image = image.convert("RGB")
        pipeline = Compose([SquashResize(size), ToTensor(), Normalize.named("ofa")])
        tensor, target = pipeline(image, {"boxes": torch.zeros(0, 4)})
        return tensor, target.get("w_ratio", size / image.width), target.get("h_ratio", size / image.height)

    @torch.no_grad()
    def generate(self, image: Image.Image | str | Path | None, prompt: str, task: str = "caption",
                 **overrides: Any) -> Prediction:
        """Run one instruction. ``task`` picks OFA's decoding settings (caption, vqa, refcoco, …)."""
        preset = {"grounding": "refcoco", "grounded_caption": "caption", "vqa": "vqa_zero_shot"}.get(task, task)
        if task == "grounding":
            # OFA decodes boxes unconstrained (a fine-tuned model has learnt to emit bins); the façade restricts
            # the output to location bins so that an under-trained model still returns a box. Not ``gen_code``:
            # that switches the decoder into image-code mode (code positions), which scrambles the boxes.
            overrides.setdefault("constraint_range", self.tokenizer.bin_range)
        text = prompt if prompt.startswith(" ") else " " + prompt
        source = torch.tensor([self.tokenizer.encode(text.lower(), add_bos=True, add_eos=True)], device=self.device)
        prefix = None
        if task == "grounding" and self.prompt_types.get("grounding", "none") == "prev_output":
            # trained with the expression as the decoder's prefix (GroundingTask prompt_type): the prefix is forced,
            # then 4 tokens (the range constraint applies after the prefix) and EOS
            prefix = source[:, 1:-1]
            overrides.setdefault("min_len", prefix.shape[1] + 4)
            overrides.setdefault("max_len_b", prefix.shape[1] + 4)
        config = GenerationConfig.preset(preset, **overrides)
        batch: dict[str, Any] = {"input_ids": source}
        ratios = (1.0, 1.0)
        if image is not None:
            size = self.image_size or IMAGE_SIZE.get(task, 480)
            pixels, w_ratio, h_ratio = self.prepare_image(image, size)
            batch["patch_images"] = pixels[None].to(self.device)
            batch["patch_masks"] = torch.tensor([True], device=self.device)
            ratios = (w_ratio * 512 / size, h_ratio * 512 / size)  # bins are relative to 512 (OFA)
        hyp = generate(self.model, batch, config, prefix_tokens=prefix)[0][0]
        tokens = [t for t in hyp.tokens.tolist() if t != self.tokenizer.eos_id]
        box = None
        lo, hi = self.tokenizer.bin_range
        if len(tokens) == 4 and all(lo <= t < hi for t in tokens):
            # OFA's de-quantisation, without bins_to_box's validation: an inverted box is returned as decoded
            scale = 512 / (self.tokenizer.num_bins - 1)
            bins = self.tokenizer.ids_to_bins(tokens)
            box = [bins[0] * scale / ratios[0], bins[1] * scale / ratios[1],
                   bins[2] * scale / ratios[0], bins[3] * scale / ratios[1]]
        return Prediction(self.tokenizer.decode(tokens).strip(), tokens, box, float(hyp.score))

    @torch.no_grad()
    def generate_image(self, caption: str, vq: Any, reranker: Any = None, num_samples: int = 24, top_k: int = 256,
                       top_p: float = -1.0, temperature: float = 1.0, seed: int | None = 42) -> list[Any]:
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
        caption = " ".join(caption.split()[:64]).lower()  # OFA: the caption's first 64 words, lower case
        text = TEXT_TO_IMAGE_PROMPT.format(caption)
        source = torch.tensor([self.tokenizer.encode(text, add_bos=True, add_eos=True)], device=self.device)
        return generate_images(self.model, source, vq, code_offset=self.tokenizer.code_offset, captions=[caption],
                               reranker=reranker, num_samples=num_samples, top_k=top_k, top_p=top_p,
                               temperature=temperature, seed=seed)[0]

    def caption(self, image) -> str:
        return self.generate(image, PROMPTS["caption"], "caption").text

    def answer(self, image, question: str) -> str:
        return self.generate(image, PROMPTS["vqa"].format(question=question.rstrip("?") + "?"), "vqa").text

    def ground(self, image, text: str) -> list[float] | None:
        return self.generate(image, PROMPTS["grounding"].format(text=text), "grounding").box


def _run_dir_prompt_types(ckpt: Path) -> dict[str, str]:
    """Task -> ``prompt_type`` from the run's ``config_resolved.yaml`` (mixture options), when the run dir has one."""
    for parent in ckpt.parents:
        cfg_path = parent / "config_resolved.yaml"
        if cfg_path.is_file():
            from omegaconf import OmegaConf

            mixture = OmegaConf.load(cfg_path).get("mixture") or {}
            found: dict[str, str] = {}
            for name, entry in mixture.items():
                if entry is None:
                    continue
                prompt_type = (entry.get("options") or {}).get("prompt_type")
                if prompt_type:
                    found[str(entry.get("task") or name)] = str(prompt_type)
            return found
    return {}


def _run_dir_tokenizer(ckpt: Path) -> Path | None:
    for parent in ckpt.parents:
        if (parent / "tokenizer" / "ofa_tokenizer.json").exists():
            return parent / "tokenizer"
    return None
