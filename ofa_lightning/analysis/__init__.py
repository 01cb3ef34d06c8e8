"""Run dirs -> tables, baselines and plots (used by ofa-demo and the notebooks)."""
