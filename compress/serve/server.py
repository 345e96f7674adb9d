"""`slimformer serve ONNX_DIR`: an HTTP server for an exported ONNX folder, with dynamic batching.

    POST /predict  {"texts": ["...", ...], "probabilities": false}
                   -> {"predictions": [{"label": "...", "score": 0.97}, ...]}   (one per text, in order)
    GET  /health   -> {"status": "ok", "labels": [...], "seq_len": ..., "limits": {...}, "batches": ..., "texts": ...}

Built on Starlette (the ASGI toolkit FastAPI is made of: routing, requests, responses, lifespan)
served by uvicorn (the reference ASGI server: HTTP/1.1 keep-alive, httptools' C parser and uvloop
when installed, and a graceful shutdown on SIGINT/SIGTERM: it stops accepting connections, lets
every request in flight get its answer, up to `shutdown_timeout_s`, then stops the batcher).
Texts of concurrent requests share model calls (`compress/serve/batcher.py`), which run in a
worker thread off the event loop. A batch of unrelated texts is sorted by length and cut into the
groups that compute the fewest padded tokens, given what one call costs beyond its tokens
(`Artifact.call_overhead_tokens`, timed once at start): on 2 cores a batch of 16 VADER sentences
padded to its longest cost kd.int8 1.07 ms a text, cut in sorted groups of 4 0.80 ms.

Limits, each a 4xx naming itself and how to get under it: the body's bytes (`max_body_bytes`,
checked on Content-Length before reading and while reading, 413), texts per request (`max_texts`,
413), characters per text (`compress/data/limits.py`: the cut the file readers make, from the
model's `seq_len`, 413); a body that is not JSON is a 400, one of the wrong shape a 422.
"""

import contextlib
import json
import os
import socket
from collections.abc import Callable

import numpy as np
import uvicorn
from pydantic import Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from compress.serve.artifact import Artifact, prediction
from compress.serve.batcher import Batcher
from eval.schema import ConfigBase

REQUEST_KEYS = ("texts", "probabilities")


class ServeConfig(ConfigBase):
    """How `slimformer serve` listens, batches and limits requests; its flags set these fields."""

    host: str = "127.0.0.1"  # address to listen on; 0.0.0.0 for every interface
    port: int = Field(8000, ge=0, le=65535)  # 0: any free port (printed at start)
    max_batch_size: int = Field(32, ge=1, le=4096)  # the most texts in one model call
    max_wait_ms: float = Field(5.0, ge=0, le=1000)  # how long a batch may wait for requests still arriving
    max_texts: int = Field(256, ge=1)  # texts per request
    max_body_bytes: int = Field(1 << 20, ge=256)  # bytes of one request body
    threads: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=256)  # ONNX Runtime intra-op threads
    shutdown_timeout_s: float = Field(30.0, gt=0)  # on SIGINT/SIGTERM, how long requests in flight may take to finish


class RequestError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def create_app(artifact: Artifact, cfg: ServeConfig, run_batch: Callable[[list[str]], np.ndarray] | None = None) -> Starlette:
    """The ASGI app; `run_batch(texts) -> (N, C) probabilities` defaults to the artifact's (tests pass a wrapper)."""
    call_tokens = None
    if run_batch is None:  # a batch of unrelated texts runs in the length groups that compute the least padding
        call_tokens = artifact.call_overhead_tokens()

        def run_batch(texts: list[str]) -> np.ndarray:
            return artifact.probabilities(texts, cfg.max_batch_size, call_tokens)

    batcher = Batcher(run_batch, cfg.max_batch_size, cfg.max_wait_ms)
    limits = {"max_batch_size": cfg.max_batch_size, "max_wait_ms": cfg.max_wait_ms, "max_texts": cfg.max_texts,
              "max_body_bytes": cfg.max_body_bytes, "max_text_chars": artifact.max_text_chars}

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "model": str(artifact.folder), "labels": artifact.labels,
                             "seq_len": artifact.seq_len, "limits": limits, "batches": batcher.batches, "texts": batcher.texts,
                             "queued": batcher.queued, "call_overhead_tokens": call_tokens})

    async def predict(request: Request) -> JSONResponse:
        with batcher.receiving():
            try:
                texts, with_probabilities = await read_request(request, cfg, artifact.max_text_chars)
            except RequestError as e:
                return JSONResponse({"error": str(e)}, status_code=e.status)
        try:
            rows = await batcher.submit(texts)  # right after receiving(): no await between (see Batcher.receiving)
        except Exception as e:  # the model failed on this batch
            return JSONResponse({"error": f"the model failed: {type(e).__name__}: {e}"}, status_code=500)
        return JSONResponse({"predictions": [prediction(row, artifact.labels, with_probabilities) for row in rows]})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        batcher.start()
        yield
        await batcher.stop()  # uvicorn has waited for the requests in flight; their texts are answered

    app = Starlette(routes=[Route("/health", health, methods=["GET"]), Route("/predict", predict, methods=["POST"])],
                    lifespan=lifespan)
    app.state.batcher = batcher
    return app


async def read_request(request: Request, cfg: ServeConfig, max_chars: int) -> tuple[list[str], bool]:
    """The texts of a /predict body and whether all probabilities are wanted; RequestError (4xx) past a limit."""
    too_big = (f"the request body is over the limit of {cfg.max_body_bytes} bytes (--max-body-bytes); "
               "send fewer texts per request")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cfg.max_body_bytes:
        raise RequestError(413, too_big)
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > cfg.max_body_bytes:
            raise RequestError(413, too_big)
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RequestError(400, f"the body is not JSON ({e}); send {{\"texts\": [\"...\"]}}") from None
    if not isinstance(data, dict) or not isinstance(data.get("texts"), list) or not data["texts"]:
        raise RequestError(422, "send a JSON object {\"texts\": [\"...\", ...]} with at least one text")
    unknown = sorted(set(data) - set(REQUEST_KEYS))
    if unknown:
        raise RequestError(422, f"unknown key(s) {unknown}; valid keys: {list(REQUEST_KEYS)}")
    texts = data["texts"]
    if len(texts) > cfg.max_texts:
        raise RequestError(413, f"{len(texts)} texts is over the limit of {cfg.max_texts} texts per request (--max-texts); "
                                "split them over several requests")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise RequestError(422, f"texts[{i}] is {type(text).__name__}, not a string")
        if len(text) > max_chars:
            raise RequestError(413, f"texts[{i}] has {len(text)} characters, over the limit of {max_chars} characters per "
                                    "text (the model reads its first tokens only); cut it to the limit")
    probabilities = data.get("probabilities", False)
    if not isinstance(probabilities, bool):
        raise RequestError(422, f"probabilities must be true or false, got {probabilities!r}")
    return texts, probabilities


def make_server(app: Starlette, cfg: ServeConfig) -> tuple[uvicorn.Server, socket.socket]:
    """A uvicorn server for `app` and its bound listening socket (port 0: the system picks one; read it off the socket).
    Run it with `server.run(sockets=[sock])`; `server.should_exit = True` (or SIGINT/SIGTERM) shuts it down gracefully."""
    config = uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=cfg.shutdown_timeout_s)
    sock = config.bind_socket()
    sock.listen(config.backlog)  # connections made from now on wait in the backlog for uvicorn, instead of being refused
    return uvicorn.Server(config), sock


def bound_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"
