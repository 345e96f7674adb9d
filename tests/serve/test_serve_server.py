"""`slimformer serve`: answers as `predict` does, batches across requests, enforces its limits, stops gracefully.

Each test runs uvicorn in a thread of the test process on a socket bound to a free loopback
port, and talks to it with the standard library's http.client. Batching and shutdown are
checked by holding the model worker on a threading.Event while requests queue up: counts and
states are waited for with a deadline, never timed.
"""

import contextlib
import http.client
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import cli
from compress.serve import load_artifact
from compress.serve.server import ServeConfig, create_app, make_server

DEADLINE_S = 60.0


@pytest.fixture(scope="module")
def artifact(onnx_dir):
    return load_artifact(onnx_dir, threads=1)


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


@contextlib.contextmanager
def running(app, cfg: ServeConfig):
    """uvicorn serving `app` in a thread; yields (server, port, thread). Stops it on exit."""
    server, sock = make_server(app, cfg)
    port = sock.getsockname()[1]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, "the server to start")
        yield server, port, thread
    finally:
        server.should_exit = True
        thread.join(DEADLINE_S)


def post(port: int, body, path: str = "/predict", method: str = "POST") -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE_S)
    try:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        conn.request(method, path, body=data if method == "POST" else None, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def config(**fields) -> ServeConfig:
    return ServeConfig(host="127.0.0.1", port=0, threads=1, **fields)


def test_concurrent_requests_get_the_labels_predict_prints(onnx_dir, artifact, texts, capsys):
    assert cli.main(["predict", str(onnx_dir), *texts[:40], "--threads", "1"]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    cfg = config(max_batch_size=8)
    with running(create_app(artifact, cfg), cfg) as (_, port, _):
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda t: post(port, {"texts": [t]}), texts[:40]))
        status, many = post(port, {"texts": texts[:40], "probabilities": True})  # one request spanning 5 batches
        status_health, health = post(port, None, "/health", "GET")
    assert all(code == 200 for code, _ in answers) and status == status_health == 200
    assert [a["predictions"][0]["label"] for _, a in answers] == [p["label"] for p in printed]
    assert [p["label"] for p in many["predictions"]] == [p["label"] for p in printed]
    assert [a["predictions"][0]["score"] for _, a in answers] == pytest.approx([p["score"] for p in printed], abs=1e-5)
    assert set(many["predictions"][0]["probabilities"]) == set(artifact.labels)
    assert health["status"] == "ok" and health["texts"] == 80 and health["limits"]["max_text_chars"] == 512


def test_requests_queued_behind_a_running_batch_share_the_next_batches(artifact):
    """A request starts a batch held on an event; 8 more queue behind it; released, they run as 2 batches of 4."""
    hold, running_batch, sizes = threading.Event(), threading.Event(), []

    def held_model(batch_texts):
        sizes.append(len(batch_texts))
        running_batch.set()
        assert hold.wait(DEADLINE_S)
        return artifact.probabilities(batch_texts)

    cfg = config(max_batch_size=4, max_wait_ms=0)
    app = create_app(artifact, cfg, run_batch=held_model)
    batcher = app.state.batcher
    with running(app, cfg) as (_, port, _), ThreadPoolExecutor(9) as pool:
        first = pool.submit(post, port, {"texts": ["good movie"]})
        wait_until(running_batch.is_set, "the first batch to start")
        rest = [pool.submit(post, port, {"texts": [t]}) for t in ["bad day", "the cat", "red tree", "not nice", "a dog", "sad",
                                                                  "very good", "blue"]]
        wait_until(lambda: batcher.queued == 8, "8 texts to queue behind the held batch")
        hold.set()
        answers = [first.result(DEADLINE_S)] + [f.result(DEADLINE_S) for f in rest]
    assert all(code == 200 for code, _ in answers)
    assert sizes == [1, 4, 4] and batcher.batches == 3
    expected = artifact.probabilities(["good movie", "bad day", "the cat", "red tree", "not nice", "a dog", "sad", "very good",
                                       "blue"])
    assert [a["predictions"][0]["label"] for _, a in answers] == [artifact.labels[i] for i in expected.argmax(-1)]


def test_limits_are_4xx_errors_that_name_them(artifact):
    cfg = config(max_texts=3, max_body_bytes=2000)
    with running(create_app(artifact, cfg), cfg) as (_, port, _):
        code, answer = post(port, {"texts": ["a" * 513]})
        assert code == 413 and "over the limit of 512 characters per text" in answer["error"]
        code, answer = post(port, {"texts": ["good"] * 4})
        assert code == 413 and "limit of 3 texts per request (--max-texts)" in answer["error"]
        code, answer = post(port, {"texts": ["x" * 500] * 3 + ["y" * 500]})
        assert code == 413 and "over the limit of 2000 bytes (--max-body-bytes)" in answer["error"]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE_S)  # no Content-Length: counted while read
        chunks = [b'{"texts": ["', b"z" * 1500, b'", "', b"z" * 1500, b'"]}']
        conn.request("POST", "/predict", body=iter(chunks), encode_chunked=True)
        response = conn.getresponse()
        assert response.status == 413 and "--max-body-bytes" in json.loads(response.read())["error"]
        conn.close()
        code, answer = post(port, b"{not json")
        assert code == 400 and "not JSON" in answer["error"]
        code, answer = post(port, {"text": "singular"})
        assert code == 422 and '{"texts": ["...", ...]}' in answer["error"]
        code, answer = post(port, {"texts": ["ok", 3]})
        assert code == 422 and "texts[1] is int" in answer["error"]
        code, answer = post(port, {"texts": ["a" * 512, "good"]})  # at the limit: served
        assert code == 200 and len(answer["predictions"]) == 2


def test_shutdown_answers_the_requests_in_flight(artifact):
    """Stop while 3 requests wait on a held batch: the port closes, all 3 get their answer, the server exits."""
    hold, running_batch = threading.Event(), threading.Event()

    def held_model(batch_texts):
        running_batch.set()
        assert hold.wait(DEADLINE_S)
        return artifact.probabilities(batch_texts)

    cfg = config(max_batch_size=4)
    app = create_app(artifact, cfg, run_batch=held_model)
    with running(app, cfg) as (server, port, thread), ThreadPoolExecutor(3) as pool:
        first = pool.submit(post, port, {"texts": ["good movie"]})
        wait_until(running_batch.is_set, "the first batch to start")
        rest = [pool.submit(post, port, {"texts": [t]}) for t in ["bad day", "the cat"]]
        wait_until(lambda: app.state.batcher.queued == 2, "2 texts to queue")
        server.should_exit = True  # what SIGINT/SIGTERM do

        def refused() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return False
            except OSError:
                return True

        wait_until(refused, "the server to stop accepting connections")
        hold.set()
        answers = [f.result(DEADLINE_S) for f in [first, *rest]]
        thread.join(DEADLINE_S)
        assert not thread.is_alive()
    assert [code for code, _ in answers] == [200, 200, 200]
    assert all(len(a["predictions"]) == 1 for _, a in answers)
