"""``ofa-export``: a checkpoint → the HF / ModelScope layout, a safetensors kit checkpoint, a full checkpoint with a
LoRA adapter merged in, or ONNX graphs.

  ofa-export --format hf runs/train/my_run/checkpoints/last.ckpt exported/
  ofa-export --format safetensors last.ckpt model.safetensors
  ofa-export --merge-adapter --format ckpt runs/lora/checkpoints/last.ckpt merged.ckpt
  ofa-export --format onnx last.ckpt onnx_dir/

Inputs: our Lightning ``.ckpt`` (tokenizer from its model card), an ``ofa-export`` ``.safetensors``, an
``ofa-convert`` output or an OFA fairseq / HF checkpoint (``--tokenizer`` names the BPE folder for those). A LoRA
adapter checkpoint needs ``--merge-adapter`` (its base weights are read from the path it records, or ``--base``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

FORMATS = ("hf", "safetensors", "ckpt", "onnx")


def load_for_export(args: argparse.Namespace) -> tuple[Any, Any, dict | None]:
    """``(OFAModel, OFATokenizer or None, model card dict or None)`` of ``args.checkpoint``."""
    from ofa_lightning.errors import UserError
    from ofa_lightning.export.safetensors_checkpoint import is_safetensors_checkpoint, load_safetensors_checkpoint
    from ofa_lightning.training.model_card import CARD_KEY, read_model_card
    from ofa_lightning.training.peft import ADAPTER_KEY, load_adapted_model
    from ofa_lightning.weights.convert import fairseq_state_dict, from_state_dict, load_checkpoint_file, load_converted

    path = Path(args.checkpoint)
    card = None
    if is_safetensors_checkpoint(path):
        model, card = load_safetensors_checkpoint(path)
    else:
        data = load_checkpoint_file(path, trust_checkpoint=args.trust_checkpoint)
        if "hyper_parameters" in data and "state_dict" in data:
            card = data.get(CARD_KEY)
            if ADAPTER_KEY in data:
                if not args.merge_adapter:
                    raise UserError(
                        f"{path} is a LoRA adapter checkpoint: pass --merge-adapter to fold it into its base weights"
                    )
                model = load_adapted_model(data, base=args.base)
            else:
                from ofa_lightning.model import OFAConfig, OFAModel

                model = OFAModel(OFAConfig.from_saved(data["hyper_parameters"]["model_config"]))
                model.load_state_dict({k[6:]: v for k, v in data["state_dict"].items() if k.startswith("model.")})
        elif "model_config" in data:
            model = load_converted(path)
        else:
            model, _ = from_state_dict(fairseq_state_dict(data))
    tokenizer = None
    if args.tokenizer:
        from ofa_lightning.tokenizer import OFATokenizer

        tdir = Path(args.tokenizer)
        tokenizer = (
            OFATokenizer.load(tdir) if (tdir / "ofa_tokenizer.json").exists() else OFATokenizer.from_ofa_files(tdir)
        )
    elif card is not None:
        tokenizer = read_model_card({CARD_KEY: card}).tokenizer()
    return model.eval(), tokenizer, card


def merged_card(card: dict | None) -> dict | None:
    """The card of a merged model: the run config without LoRA (the weights are now plain)."""
    if not card or not isinstance(card.get("config"), dict):
        return card
    config = dict(card["config"])
    module = dict(config.get("module") or {})
    module["peft"] = None
    module["init_from"] = None
    config["module"] = module
    return {**card, "config": config}


def write_ckpt(model: Any, card: dict | None, out: Path) -> None:
    """A plain Lightning-style checkpoint (``state_dict`` + ``hyper_parameters`` + model card) that ``OFA.load``,
    ``ofa-eval`` and ``module.init_from`` read, written through the kit's atomic, checksummed save."""
    from dataclasses import asdict

    from ofa_lightning.training.checkpointing import atomic_torch_save
    from ofa_lightning.training.model_card import CARD_KEY

    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    data = {"state_dict": state, "hyper_parameters": {"model_config": asdict(model.config)}}
    if card:
        data[CARD_KEY] = card
    atomic_torch_save(data, out)


def _image_size(card: dict | None) -> int | None:
    """The run's image size (``data.task_options.image_size``) from a model card, when it records one."""
    config = (card or {}).get("config") or {}
    return ((config.get("data") or {}).get("task_options") or {}).get("image_size")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ofa-export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", help="our .ckpt / .safetensors, an ofa-convert file or an OFA checkpoint")
    parser.add_argument("output", help="a folder (hf, onnx) or a file (safetensors, ckpt)")
    parser.add_argument("--format", choices=FORMATS, default="hf", help="what to write (default: hf)")
    parser.add_argument("--merge-adapter", action="store_true", help="fold a LoRA adapter into its base weights")
    parser.add_argument("--base", help="a LoRA adapter's base weights, when they moved from the recorded path")
    parser.add_argument("--tokenizer", help="tokenizer folder (OFA's BPE files or a saved tokenizer)")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (onnx format)")
    parser.add_argument("--image-size", type=int, help="image size of the ONNX encoder (default: the run's)")
    parser.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow arbitrary pickled objects (torch.load weights_only=False); only for trusted files",
    )
    args = parser.parse_args(argv)
    from ofa_lightning.errors import UserError

    out = Path(args.output)
    try:
        model, tokenizer, card = load_for_export(args)
        if args.merge_adapter:
            card = merged_card(card)
        if args.format == "hf":
            from ofa_lightning.export.hf import export_hf

            export_hf(model, out, tokenizer)
            if tokenizer is None:
                print("ofa-export: no tokenizer (pass --tokenizer): wrote weights and config only", file=sys.stderr)
        elif args.format == "safetensors":
            from ofa_lightning.export.safetensors_checkpoint import save_safetensors_checkpoint

            save_safetensors_checkpoint(model, out, card)
        elif args.format == "ckpt":
            write_ckpt(model, card, out)
        else:
            from ofa_lightning.export.onnx_graphs import export_onnx

            export_onnx(
                model, out, opset=args.opset, tokenizer=tokenizer, image_size=args.image_size or _image_size(card)
            )
    except (UserError, FileNotFoundError, KeyError, ValueError, RuntimeError) as exc:
        print(f"ofa-export: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({args.format})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
