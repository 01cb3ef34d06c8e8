"""The two kinds of failure a recipe can meet, kept apart on purpose.

`BadSample` concerns one raw record: the runner counts it as a skip (with its reason in the manifest), or,
under `--strict`, stops with the file and sample named. `PrepareError` concerns the whole run (a missing
file, a wrong folder, an out dir holding another run's shards): it always stops the run with a message that
says what was expected where.
"""


class BadSample(ValueError):
    """One raw record cannot become a sample; the message is the reason stored in the manifest."""


class PrepareError(RuntimeError):
    """The run cannot go on; the message tells the user what to fix."""
