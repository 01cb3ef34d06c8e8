"""``VQModel``: a VQGAN image tokenizer (image → codes, codes → image) in taming-transformers' key layout.

Presets (:meth:`VQConfig.preset`):

``gumbel_f8_8192``  OFA's tokenizer: taming's "VQGAN OpenImages (f=8), 8192 codes, GumbelQuantization" (``GumbelVQ``;
                    ch 128, ch_mult 1-1-2-4, 2 res blocks, attention at 32², z 256, embed 256). 256² → 32×32 codes.
``shapes_small``    a narrow f=8 VQ model (plain vector quantiser, 256 codes, ch 16) the kit trains on the shapes
                    scenes in minutes on a CPU (``python -m ofa_lightning.training.vq_train``), so image infilling and
                    text-to-image run end to end without downloaded weights.

Pixels are in [-1, 1] (taming's convention); :func:`preprocess` / :func:`to_pil` convert from / to PIL images
(resize with LANCZOS, as OFA's code-generation script).

Checkpoints: our files (``save`` / ``load``: ``{"vq_config": ..., "state_dict": ...}``), or taming's Lightning
checkpoints + their YAML config (:meth:`VQModel.from_taming`). :meth:`VQModel.load_taming_state_dict` reports
every key: loaded, missing, unexpected, shape mismatches, and the ``loss.*`` entries (discriminator / LPIPS of
taming's training loss) that are ignored on purpose.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn

from .modules import Decoder, Encoder
from .quantize import GumbelQuantize, VectorQuantizer

__all__ = ["VQConfig", "VQModel", "LoadReport", "preprocess", "to_pil", "IGNORED_PREFIXES"]

#: taming checkpoint entries that belong to the training loss, not to the tokenizer
IGNORED_PREFIXES = ("loss.",)
QUANTIZERS = ("gumbel", "vq")


@dataclass
class VQConfig:
    quantizer: str = "gumbel"  # gumbel (taming GumbelVQ) | vq (taming VQModel)
    n_embed: int = 8192
    embed_dim: int = 256
    z_channels: int = 256
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (32,)
    resolution: int = 256
    in_channels: int = 3
    out_ch: int = 3
    dropout: float = 0.0
    norm_groups: int = 32
    beta: float = 0.25  # vq: commitment weight
    kl_weight: float = 1e-8  # gumbel: KL weight (taming's config for the OpenImages model)
    temperature: float = 1.0  # gumbel: training temperature

    def __post_init__(self) -> None:
        self.ch_mult = tuple(int(v) for v in self.ch_mult)
        self.attn_resolutions = tuple(int(v) for v in self.attn_resolutions)
        if self.quantizer not in QUANTIZERS:
            raise ValueError(f"quantizer must be one of {QUANTIZERS}, got {self.quantizer!r}")
        if self.quantizer == "gumbel" and self.embed_dim != self.z_channels:
            # taming's GumbelVQ feeds quant_conv's embed_dim channels to a proj built for z_channels inputs
            raise ValueError("the gumbel quantizer needs embed_dim == z_channels (as taming's GumbelVQ)")

    @property
    def factor(self) -> int:
        """Down-sampling factor f (pixels per code side)."""
        return 2 ** (len(self.ch_mult) - 1)

    def grid(self, image_size: int) -> int:
        """Codes per side for a square image of ``image_size`` pixels."""
        if image_size % self.factor:
            raise ValueError(f"image size {image_size} is not a multiple of the VQ factor {self.factor}")
        return image_size // self.factor

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ch_mult"], data["attn_resolutions"] = list(self.ch_mult), list(self.attn_resolutions)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VQConfig:
        data = dict(data)
        base = data.pop("preset", None)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown VQConfig fields {unknown}")
        return cls.preset(base, **data) if base else cls(**data)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> VQConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown VQ preset {name!r}; known: {', '.join(sorted(PRESETS))}")
        return replace(PRESETS[name], **overrides)

    @classmethod
    def from_taming(cls, config: Mapping[str, Any] | str | Path) -> VQConfig:
        """taming's YAML config (``model: {target, params: {embed_dim, n_embed, ddconfig, ...}}``) → VQConfig."""
        if isinstance(config, (str, Path)):
            from omegaconf import OmegaConf

            config = OmegaConf.to_container(OmegaConf.load(str(config)), resolve=True)
        model = config.get("model", config)
        target = str(model.get("target", ""))
        params = model.get("params", model)
        dd = params["ddconfig"]
        if target.endswith("GumbelVQ"):
            quantizer = "gumbel"
        elif target.endswith("VQModel") or not target:
            quantizer = "vq"
        else:
            raise ValueError(f"unsupported taming model {target!r} (GumbelVQ and VQModel are)")
        if dd.get("double_z", False):
            raise ValueError("ddconfig.double_z=true is a KL autoencoder, not a VQGAN")
        return cls(
            quantizer=quantizer,
            n_embed=int(params["n_embed"]),
            embed_dim=int(params["embed_dim"]),
            z_channels=int(dd["z_channels"]),
            ch=int(dd["ch"]),
            ch_mult=tuple(dd["ch_mult"]),
            num_res_blocks=int(dd["num_res_blocks"]),
            attn_resolutions=tuple(dd.get("attn_resolutions", ())),
            resolution=int(dd["resolution"]),
            in_channels=int(dd.get("in_channels", 3)),
            out_ch=int(dd.get("out_ch", 3)),
            dropout=float(dd.get("dropout", 0.0)),
            kl_weight=float(params.get("kl_weight", 1e-8)),
        )


PRESETS: dict[str, VQConfig] = {
    "gumbel_f8_8192": VQConfig(),
    "shapes_small": VQConfig(
        quantizer="vq",
        n_embed=256,
        embed_dim=32,
        z_channels=32,
        ch=16,
        ch_mult=(1, 1, 2, 4),
        num_res_blocks=1,
        attn_resolutions=(),
        resolution=64,
        norm_groups=8,
    ),
}


@dataclass
class LoadReport:
    """What happened to every key of a loaded state dict."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the model, not in the file
    unexpected: list[str] = field(default_factory=list)  # in the file, not in the model
    mismatched: list[str] = field(default_factory=list)  # "name: file shape vs model shape"
    ignored: list[str] = field(default_factory=list)  # taming training-loss entries (loss.*)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        def part(name: str, keys: list[str]) -> str:
            shown = ", ".join(keys[:8]) + (f", ... ({len(keys) - 8} more)" if len(keys) > 8 else "")
            return f"{len(keys)} {name}" + (f" [{shown}]" if keys and name != "loaded" else "")

        return "; ".join(
            part(n, getattr(self, n)) for n in ("loaded", "missing", "unexpected", "mismatched", "ignored")
        )


class VQModel(nn.Module):
    """Encoder → quant_conv → quantize → post_quant_conv → decoder, with taming's module names."""

    def __init__(self, config: VQConfig | Mapping[str, Any] | str | None = None):
        super().__init__()
        if config is None:
            config = VQConfig()
        elif isinstance(config, str):
            config = VQConfig.preset(config)
        elif not isinstance(config, VQConfig):
            config = VQConfig.from_dict(config)
        self.config = c = config
        common = dict(
            ch=c.ch,
            ch_mult=c.ch_mult,
            num_res_blocks=c.num_res_blocks,
            attn_resolutions=c.attn_resolutions,
            resolution=c.resolution,
            z_channels=c.z_channels,
            dropout=c.dropout,
            norm_groups=c.norm_groups,
        )
        self.encoder = Encoder(in_channels=c.in_channels, **common)
        self.decoder = Decoder(out_ch=c.out_ch, **common)
        if c.quantizer == "gumbel":
            self.quantize: nn.Module = GumbelQuantize(
                c.z_channels, c.embed_dim, c.n_embed, kl_weight=c.kl_weight, temperature=c.temperature
            )
        else:
            self.quantize = VectorQuantizer(c.n_embed, c.embed_dim, beta=c.beta)
        self.quant_conv = nn.Conv2d(c.z_channels, c.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(c.embed_dim, c.z_channels, 1)

    # ------------------------------------------------------------------------------------------- core
    @property
    def n_embed(self) -> int:
        return self.config.n_embed

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode_latent(self, pixels: Tensor) -> Tensor:
        return self.quant_conv(self.encoder(pixels))

    @torch.no_grad()
    def encode(self, image: Tensor | Image.Image | Sequence[Image.Image], image_size: int | None = None) -> Tensor:
        """Pixels (B, 3, H, W) in [-1, 1] — or PIL image(s), resized to ``image_size`` (default: the config's
        ``resolution``) — → codes (B, H/f, W/f), int64."""
        pixels = self._pixels(image, image_size)
        return self.quantize.codes(self.encode_latent(pixels))

    def decode_latent(self, quant: Tensor) -> Tensor:
        return self.decoder(self.post_quant_conv(quant))

    @torch.no_grad()
    def decode(self, codes: Tensor | Sequence[int] | Sequence[Sequence[int]]) -> Tensor:
        """Codes (B, h, w), or flat (B, h·w) / (h·w,) square grids → pixels (B, 3, h·f, w·f) in [-1, 1]."""
        codes = torch.as_tensor(codes, dtype=torch.long, device=self.device)
        if codes.dim() == 1:
            codes = codes[None]
        if codes.dim() == 2:
            side = math.isqrt(codes.size(1))
            if side * side != codes.size(1):
                raise ValueError(f"{codes.size(1)} codes do not form a square grid")
            codes = codes.view(codes.size(0), side, side)
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.n_embed):
            raise ValueError(f"codes must lie in [0, {self.n_embed})")
        return self.decode_latent(self.quantize.lookup(codes)).clamp(-1, 1)

    def decode_to_pil(self, codes: Any) -> list[Image.Image]:
        return [to_pil(x) for x in self.decode(codes)]

    def forward(self, pixels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Training pass: (reconstruction, quantiser loss, codes)."""
        quant, qloss, codes = self.quantize(self.encode_latent(pixels))
        return self.decode_latent(quant), qloss, codes

    def _pixels(self, image: Any, image_size: int | None) -> Tensor:
        if isinstance(image, Tensor):
            pixels = image if image.dim() == 4 else image[None]
        else:
            images = [image] if isinstance(image, Image.Image) else list(image)
            size = image_size or self.config.resolution
            pixels = torch.stack([preprocess(im, size) for im in images])
        return pixels.to(self.device, dtype=next(self.parameters()).dtype)

    # ------------------------------------------------------------------------------------------- weights
    def load_taming_state_dict(self, state: Mapping[str, Tensor], strict: bool = True) -> LoadReport:
        """Loads a state dict in taming's layout (a Lightning checkpoint's ``state_dict`` is unwrapped).

        Every key is accounted for in the returned report; with ``strict`` a missing, unexpected or mis-shaped key
        raises ``ValueError`` naming them (nothing is loaded then)."""
        if "state_dict" in state and isinstance(state["state_dict"], Mapping):
            state = state["state_dict"]
        own = self.state_dict()
        report = LoadReport()
        to_load: dict[str, Tensor] = {}
        for key, value in state.items():
            if key.startswith(IGNORED_PREFIXES):
                report.ignored.append(key)
            elif key not in own:
                report.unexpected.append(key)
            elif tuple(value.shape) != tuple(own[key].shape):
                report.mismatched.append(f"{key}: {tuple(value.shape)} vs {tuple(own[key].shape)}")
            else:
                to_load[key] = value
        report.missing = [k for k in own if k not in state]
        if strict and not report.ok:
            raise ValueError(f"VQ state dict does not match the model: {report.summary()}")
        self.load_state_dict(to_load, strict=False)
        report.loaded = sorted(to_load)
        return report

    def save(self, path: str | Path, **extra: Any) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"vq_config": self.config.to_dict(), "state_dict": self.state_dict(), **extra}, path)
        return path

    @classmethod
    def load(
        cls,
        path: str | Path,
        config: Any = None,
        map_location: str | torch.device = "cpu",
        trust_checkpoint: bool = False,
    ) -> VQModel:
        """Our file (config inside), or a taming checkpoint with ``config`` (its YAML path / mapping / VQConfig)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"VQ checkpoint not found: {path}")
        data = torch.load(path, map_location=map_location, weights_only=not trust_checkpoint)
        if "vq_config" in data:
            model = cls(VQConfig.from_dict(data["vq_config"]))
        else:
            if config is None:
                raise ValueError(f"{path} is not an ofa-lightning VQ file: give the taming YAML config as config=")
            model = cls(
                config
                if isinstance(config, VQConfig)
                else VQConfig.from_dict(config)
                if isinstance(config, Mapping) and "model" not in config
                else VQConfig.from_taming(config)
            )
        model.load_taming_state_dict(data)
        return model.eval()

    @classmethod
    def from_taming(cls, ckpt_path: str | Path, config_path: str | Path, trust_checkpoint: bool = False) -> VQModel:
        """taming's ``last.ckpt`` + ``model.yaml`` (e.g. the VQGAN shipped with OFA's image_gen checkpoint)."""
        return cls.load(ckpt_path, config=VQConfig.from_taming(config_path), trust_checkpoint=trust_checkpoint)


def preprocess(image: Image.Image, size: int) -> Tensor:
    """PIL → (3, size, size) float in [-1, 1] (RGB, LANCZOS resize as OFA's generate_code.py)."""
    image = image.convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.LANCZOS)
    data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(size, size, 3)
    return data.permute(2, 0, 1).float().div(127.5).sub(1.0)


def to_pil(pixels: Tensor) -> Image.Image:
    """(3, H, W) in [-1, 1] → PIL RGB."""
    x = ((pixels.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return Image.fromarray(x.permute(1, 2, 0).cpu().numpy(), "RGB")
