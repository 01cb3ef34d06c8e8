"""OFA rebuilt as a PyTorch Lightning + Hydra experiment kit."""
__version__ = "0.1.0"
