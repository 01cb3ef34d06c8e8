"""``ofa-serve``: one process holds a checkpoint and serves a web page and a JSON HTTP API (FastAPI + uvicorn) with
dynamic batching (ofa_lightning/serve/, docs/serving.md) (Hydra main, version_base 1.3)."""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from ofa_lightning.cli._hydra import hydra_command

log = logging.getLogger("ofa_lightning.serve")


def build_app(cfg: DictConfig):
    """The FastAPI app for ``cfg`` (conf/serve.yaml): the checkpoint loaded, the batcher configured."""
    import torch

    from ofa_lightning.api import OFA
    from ofa_lightning.serve.app import create_app
    from ofa_lightning.serve.engine import ServeEngine

    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    ofa = OFA.load(cfg.ckpt_path, tokenizer=cfg.tokenizer_path, image_size=cfg.image_size, device=device)
    engine = ServeEngine(
        ofa,
        max_instruction_chars=cfg.max_instruction_chars,
        vq_path=cfg.vq_path,
        vq_config=cfg.vq_config,
        t2i_samples=cfg.t2i_samples,
    )
    return create_app(
        engine,
        max_batch=cfg.max_batch,
        wait_ms=cfg.wait_ms,
        max_queue=cfg.max_queue,
        max_upload_mb=cfg.max_upload_mb,
        max_image_pixels=cfg.max_image_pixels,
        request_timeout_s=cfg.request_timeout_s,
    )


def serve(cfg: DictConfig) -> None:
    import uvicorn

    app = build_app(cfg)
    if cfg.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning(
            "listening on %s: anyone who can reach this address can use the model and upload files "
            "(no authentication); see docs/serving.md",
            cfg.host,
        )
    logging.getLogger("ofa_lightning.serve").setLevel(str(cfg.log_level).upper())
    print(f"ofa-serve: http://{cfg.host}:{cfg.port} (page), /predict, /info, /health", flush=True)
    # Hydra's logging stays in charge (console + the run dir's serve.log); the app logs one line per request
    uvicorn.run(
        app, host=str(cfg.host), port=int(cfg.port), log_config=None, access_log=False, log_level=str(cfg.log_level)
    )


main = hydra_command("serve", serve, prog="ofa-serve")


if __name__ == "__main__":
    main()
