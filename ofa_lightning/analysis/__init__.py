"""Run dirs -> tables, baselines and plots (used by ofa-demo, ofa-report and the notebooks).

* ``runs``: one run dir — config, metrics frame, throughput, configured vs realised mixture, predictions (+ images);
* ``sweep``: a sweep's run dirs — labels by mixture and overrides, one comparison row per run;
* ``plots``: matplotlib figures — curves, throughput, mixture, prediction gallery, sweep bars;
* ``try_model``: a checkpoint on one image — caption, VQA, grounding, grounded QA / captioning, drawn;
* ``baselines``: trivial baselines a trained model must beat.

Import the submodule you need (``from ofa_lightning.analysis import runs``); nothing is imported eagerly.
"""
