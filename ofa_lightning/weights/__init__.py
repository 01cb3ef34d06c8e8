"""Checkpoint files, apart from the architecture: importing OFA's released weights (``convert``: fairseq and
HF/ModelScope state dicts into :class:`~ofa_lightning.model.OFAModel`) and verifying checkpoint files on load
(``integrity``: sha256 sidecars, zip CRCs)."""
