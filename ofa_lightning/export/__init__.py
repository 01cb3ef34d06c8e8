"""Ways out of the kit: the HF / ModelScope layout (``hf.py``), safetensors kit checkpoints
(``safetensors_checkpoint.py``) and ONNX graphs with an onnxruntime beam search (``onnx_graphs.py``,
``onnx_runner.py``). ``ofa-export`` (``ofa_lightning/cli/export.py``) drives them."""
