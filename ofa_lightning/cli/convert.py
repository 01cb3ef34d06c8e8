"""``ofa-convert``: an OFA fairseq checkpoint or HF/ModelScope state dict → an ofa-lightning checkpoint.

The output is a ``torch.save`` of ``{"state_dict", "model_config", "conversion"}`` that
``ofa_lightning.weights.convert.load_converted`` (and the training/eval entry points) read
with ``weights_only=True``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ofa-convert", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", help="OFA fairseq .pt, or a HF/ModelScope pytorch_model.bin")
    parser.add_argument("output", help="where to write the converted checkpoint (.pt)")
    parser.add_argument(
        "--size",
        choices=["tiny", "medium", "base", "large", "huge", "cn_base", "cn_large"],
        help="expected size (default: inferred from the tensors)",
    )
    parser.add_argument("--vocab-size", type=int, help="grow the vocabulary to this size (OFA's resize rule)")
    parser.add_argument("--ema", action="store_true", help="take the EMA weights (OFA's VQA checkpoints)")
    parser.add_argument("--non-strict", action="store_true", help="report missing/unexpected keys instead of failing")
    parser.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow arbitrary pickled objects (torch.load weights_only=False); only for trusted files",
    )
    args = parser.parse_args(argv)
    import torch

    from ofa_lightning.weights.convert import (
        checkpoint_config,
        fairseq_state_dict,
        from_state_dict,
        load_checkpoint_file,
    )

    try:
        raw = load_checkpoint_file(args.checkpoint, trust_checkpoint=args.trust_checkpoint)
        sd = fairseq_state_dict(raw, use_ema=args.ema)
        overrides = {"vocab_size": args.vocab_size} if args.vocab_size else {}
        config = checkpoint_config(raw, sd, args.size, **overrides)
        model, report = from_state_dict(sd, config, strict=not args.non_strict)
    except (FileNotFoundError, KeyError, ValueError, RuntimeError) as exc:
        print(f"ofa-convert: error: {exc}", file=sys.stderr)
        return 2
    torch.save(
        {"state_dict": model.state_dict(), "model_config": asdict(model.config), "conversion": report.summary()},
        args.output,
    )
    print(report.summary())
    print(f"wrote {args.output} ({model.num_parameters()['total']:,} parameters)")
    from ofa_lightning.tokenizer.released import RELEASED_VOCABULARIES, checkpoint_vocabulary

    vocabulary = checkpoint_vocabulary(raw, model.config.vocab_size)
    if vocabulary is not None:
        print(f"vocabulary: {RELEASED_VOCABULARIES[vocabulary][1]}; use tokenizer={vocabulary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
