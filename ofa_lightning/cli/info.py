"""``ofa-info``: what the kit knows — the model size catalogue (tiny … huge) with each size's settings and
parameter counts (built on the meta device: nothing is allocated).

  ofa-info sizes            # a table
  ofa-info sizes --json     # the same as JSON
"""

from __future__ import annotations

import argparse
import json


def size_table() -> list[dict]:
    """Each catalogue size with its settings and parameter counts (built on the meta device)."""
    import torch

    from ofa_lightning.model import CATALOGUE, OFAModel
    from ofa_lightning.model.config import REFERENCE_PARAM_COUNTS

    rows = []
    for name, cfg in CATALOGUE.items():
        with torch.device("meta"):
            counts = OFAModel(cfg).num_parameters()
        rows.append(
            {
                "name": name,
                "settings": {k: v for k, v in cfg.to_dict().items() if k != "name"},
                "params_total": counts["total"],
                "params_resnet": counts["resnet"],
                "params_modelscope_port": REFERENCE_PARAM_COUNTS[name],
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="ofa-info", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="what", required=True)
    sizes = sub.add_parser("sizes", help="the model size catalogue")
    sizes.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    rows = size_table()
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(
        f"{'size':<8}{'d_model':>8}{'layers':>8}{'heads':>6}{'ffn':>6}  {'resnet':<10}{'params':>14}{'resnet part':>14}"
    )
    for r in rows:
        s = r["settings"]
        print(
            f"{r['name']:<8}{s['d_model']:>8}{s['encoder_layers']:>5}+{s['decoder_layers']:<2}"
            f"{s['encoder_attention_heads']:>6}{s['encoder_ffn_dim']:>6}  {s['resnet_type']:<10}"
            f"{r['params_total']:>14,}{r['params_resnet']:>14,}"
        )


if __name__ == "__main__":
    main()
