"""Serving an exported ONNX folder: the artifact, batch prediction over files, and an HTTP server.

    artifact = load_artifact("runs/quickstart/stages/teacher/onnx", threads=2)   # session, tokenizer, labels
    probs = artifact.probabilities(["a small dog"])                              # (N, C), input order
    predict_file(artifact, "texts.csv", "predictions.jsonl")                     # streamed, length-sorted chunks
    app = create_app(artifact, ServeConfig())          # compress.serve.server: Starlette app, dynamic batching

One file per concept: `artifact.py` (load a folder, clean errors), `files.py` (readers and writers
of `slimformer predict --input`), `batcher.py` (dynamic batching across requests), `server.py`
(`slimformer serve`: routes, limits, uvicorn). This package reads only what the `export` step
wrote; it imports no step and nothing of the runner. `server` is imported on its own, so
`predict` never loads the web stack.
"""

from compress.serve.artifact import Artifact, load_artifact, prediction
from compress.serve.files import CHUNK_ROWS, READERS, WRITERS, predict_file

__all__ = ["Artifact", "CHUNK_ROWS", "READERS", "WRITERS", "load_artifact", "predict_file", "prediction"]
