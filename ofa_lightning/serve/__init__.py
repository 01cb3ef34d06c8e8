"""``ofa-serve``: one process that holds a checkpoint and serves a web page and a JSON HTTP API (FastAPI + uvicorn),
with dynamic batching of concurrent requests (``batching.py``); see docs/serving.md."""
