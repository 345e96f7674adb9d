"""Load test of `slimformer serve`: throughput and latency at 1, 8 and 32 concurrent clients.

    python -m eval.load runs/quickstart/stages/teacher/onnx --texts texts.txt [--levels 1 8 32] [--requests 2000]
                        [--max-seconds 120] [--server-args "--max-wait-ms 5"] [--out load.json]

Starts the server as a process of its own (`cli.py serve ONNX_DIR --host 127.0.0.1 --port 0`:
loopback only, on a port the system picks, read from the line the server prints), waits for
`GET /health`, then for each level runs that many clients at once, each on its own keep-alive
connection, sending one text per `POST /predict` (texts cycled in file order) and waiting for the
answer before sending the next (a closed loop, as wrk and Locust users do), until `requests`
requests are answered or `max_seconds` have passed. `warmup` requests per level go first,
uncounted. A request fails when it errors, times out or answers anything but 200 with predictions.
Per level: requests, failed, throughput (answered requests per second), p50/p90/p99 latency, and
the mean batch the server formed (from /health's counters). The server is then stopped with
SIGINT, which it answers with a graceful shutdown, and must exit within `STOP_TIMEOUT_S`.

The client speaks just the HTTP/1.1 this needs, on asyncio streams: a POST with Content-Length,
an answer with Content-Length (what the server's JSON answers carry). On a small machine the
clients share the cores with the server, so their cost per request is kept to a few microseconds
of Python; what they cost is in the numbers, as it is for any client on the same machine.

Texts come from a text file (one per line) or a JSON-lines file of `{"text": ...}` (as the bench
step writes them: `eval/traffic.py`'s TEXTS_FILE). This module imports nothing of `compress`: it
measures the server from outside, over HTTP.
"""

import argparse
import asyncio
import itertools
import json
import re
import shlex
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from eval.bench import REPO_ROOT, latency_stats
from eval.env import cpu_model, usable_cores
from eval.errors import SlimformerError
from eval.io import atomic_write_json
from eval.traffic import read_texts

LEVELS = (1, 8, 32)  # concurrent clients
REQUESTS = 2000  # answered requests per level
START_TIMEOUT_S = 180.0  # the server's start: imports, loading the model
STOP_TIMEOUT_S = 60.0  # the server's graceful shutdown after SIGINT
REQUEST_TIMEOUT_S = 30.0  # one request
URL_LINE = re.compile(rb"http://([0-9.]+):(\d+)")


class Connection:
    """One keep-alive HTTP/1.1 connection to the server."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        """(status, body) of one request; reconnects when the connection was closed."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.writer.write(head + body)
        try:
            header = await self.reader.readuntil(b"\r\n\r\n")
            lines = header.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            fields = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
            answer = await self.reader.readexactly(int(fields["content-length"]))
        except BaseException:
            self.close()
            raise
        if fields.get("connection") == "close":
            self.close()
        return status, answer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def health(host: str, port: int) -> dict:
    conn = Connection(host, port)
    try:
        status, body = await asyncio.wait_for(conn.request("GET", "/health"), REQUEST_TIMEOUT_S)
    finally:
        conn.close()
    if status != 200:
        raise SlimformerError(f"GET /health answered {status}: {body[:200]!r}")
    return json.loads(body)


async def run_level(host: str, port: int, bodies: list[bytes], clients: int, requests: int, max_seconds: float,
                    warmup: int) -> dict:
    """`clients` closed-loop clients until `requests` are answered or `max_seconds` pass: the level's record."""
    loop = asyncio.get_running_loop()
    conns = [Connection(host, port) for _ in range(clients)]
    latencies_ms: list[float] = []
    failed = [0]

    async def one(conn: Connection, body: bytes, timed: bool) -> None:
        start = time.perf_counter()
        try:
            status, answer = await asyncio.wait_for(conn.request("POST", "/predict", body), REQUEST_TIMEOUT_S)
            ok = status == 200 and b'"predictions"' in answer
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError, KeyError):
            ok = False
            conn.close()
        if timed:
            latencies_ms.append((time.perf_counter() - start) * 1000.0)
            failed[0] += not ok

    async def client(conn: Connection, numbers: itertools.count, limit: int, deadline: float, timed: bool) -> None:
        for i in numbers:
            if i >= limit or loop.time() > deadline:
                return
            await one(conn, bodies[i % len(bodies)], timed)

    warm = itertools.count()
    await asyncio.gather(*(client(c, warm, warmup, loop.time() + max_seconds, False) for c in conns))
    before = await health(host, port)
    numbers, start = itertools.count(), time.perf_counter()
    await asyncio.gather(*(client(c, numbers, requests, loop.time() + max_seconds, True) for c in conns))
    seconds = time.perf_counter() - start
    after = await health(host, port)
    for conn in conns:
        conn.close()
    stats = latency_stats(np.asarray(latencies_ms)) if latencies_ms else {}
    batches = after["batches"] - before["batches"]
    return {"clients": clients, "requests": len(latencies_ms), "failed": failed[0], "seconds": seconds,
            "requests_per_s": (len(latencies_ms) - failed[0]) / seconds, "complete": len(latencies_ms) >= requests,
            "mean_batch": (after["texts"] - before["texts"]) / batches if batches else 0.0, **stats}


def server_command(onnx_dir: Path, server_args: list[str]) -> list[str]:
    cli = REPO_ROOT / "cli.py"  # beside eval/ in a checkout and in site-packages alike
    entry = [str(cli)] if cli.is_file() else ["-m", "cli"]
    return [sys.executable, *entry, "serve", str(onnx_dir), "--host", "127.0.0.1", "--port", "0", *server_args]


async def start_server(command: list[str], log) -> tuple[asyncio.subprocess.Process, str, int]:
    """The server process and the (host, port) it printed; SlimformerError with its log when it does not start."""
    proc = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE, stderr=log,
                                                stdin=asyncio.subprocess.DEVNULL)
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            line = await asyncio.wait_for(proc.stdout.readline(), max(deadline - time.monotonic(), 0.001))
            if not line:
                await proc.wait()
                raise SlimformerError(f"the server exited with code {proc.returncode} before serving: {tail(log)}")
            found = URL_LINE.search(line)
            if found:
                host, port = found.group(1).decode(), int(found.group(2))
                break
        while True:  # it listens from the line on; /health answers once the model is served
            try:
                await health(host, port)
                return proc, host, port
            except OSError:
                if proc.returncode is not None or time.monotonic() > deadline:
                    raise SlimformerError(f"the server at {host}:{port} never answered /health: {tail(log)}") from None
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise SlimformerError(f"the server did not start within {START_TIMEOUT_S:.0f} s: {tail(log)}") from None
    except BaseException:
        await stop_server(proc)
        raise


async def stop_server(proc: asyncio.subprocess.Process) -> int:
    """SIGINT (graceful: requests in flight finish), then the exit code; killed if it does not stop in time."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    return proc.returncode


def tail(log) -> str:
    log.flush()
    log.seek(0)
    return log.read().decode("utf-8", "replace")[-2000:].strip() or "(no output)"


async def load_test(onnx_dir: Path, texts: list[str], levels: list[int], requests: int, max_seconds: float, warmup: int,
                    server_args: list[str], say=print) -> dict:
    """Start the server, run every level, stop it: the results record."""
    bodies = [json.dumps({"texts": [t]}).encode() for t in texts]
    command = server_command(onnx_dir, server_args)
    with tempfile.TemporaryFile() as log:
        proc, host, port = await start_server(command, log)
        try:
            served = await health(host, port)
            records = []
            for clients in levels:
                records.append(await run_level(host, port, bodies, clients, requests, max_seconds, warmup))
                say(row(records[-1]))
        finally:
            code = await stop_server(proc)
        if code not in (0, -signal.SIGINT):
            raise SlimformerError(f"the server exited with code {code} after SIGINT (a graceful stop exits 0): {tail(log)}")
    return {"onnx_dir": str(onnx_dir), "server_command": shlex.join(command), "server_exit_code": code,
            "limits": served["limits"], "seq_len": served["seq_len"], "n_texts": len(texts), "requests_per_level": requests,
            "max_seconds": max_seconds, "warmup": warmup, "cpu": cpu_model(), "cores": usable_cores(),
            "client": "closed loop, one keep-alive connection per client, one text per request", "levels": records}


HEADER = f"{'clients':>7} {'requests':>8} {'failed':>6} {'req/s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'batch':>6}"


def row(r: dict) -> str:
    return (f"{r['clients']:>7} {r['requests']:>8} {r['failed']:>6} {r['requests_per_s']:>8.1f} {r.get('p50_ms', 0):>8.2f} "
            f"{r.get('p90_ms', 0):>8.2f} {r.get('p99_ms', 0):>8.2f} {r['mean_batch']:>6.1f}"
            + ("" if r["complete"] else "  (time bound)"))


def load_texts(path: Path) -> list[str]:
    if not path.is_file():
        raise SlimformerError(f"texts file {path} not found: one text per line (.txt) or {{\"text\": ...}} per line (.jsonl)")
    if path.suffix == ".jsonl":
        texts = read_texts(path)
    else:
        texts = [t for t in path.read_text(encoding="utf-8").splitlines() if t.strip()]
    if not texts:
        raise SlimformerError(f"texts file {path} holds no text")
    return texts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.load", description=__doc__.splitlines()[0])
    parser.add_argument("onnx_dir", type=Path)
    parser.add_argument("--texts", type=Path, required=True, help="one text per line (.txt), or {\"text\": ...} lines (.jsonl)")
    parser.add_argument("--levels", type=int, nargs="+", default=list(LEVELS), help="concurrent clients (default 1 8 32)")
    parser.add_argument("--requests", type=int, default=REQUESTS, help=f"answered requests per level (default {REQUESTS})")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="time bound per level (default 120)")
    parser.add_argument("--warmup", type=int, default=100, help="uncounted requests before each level (default 100)")
    parser.add_argument("--server-args", default="", help="more `slimformer serve` flags, e.g. \"--max-wait-ms 2 --threads 2\"")
    parser.add_argument("--out", type=Path, default=Path("load.json"), help="the results as JSON (default ./load.json)")
    args = parser.parse_args(argv)
    try:
        if min(args.levels) < 1 or args.requests < 1 or args.max_seconds <= 0 or args.warmup < 0:
            raise SlimformerError("--levels and --requests must be at least 1, --max-seconds above 0, --warmup at least 0")
        texts = load_texts(args.texts)
        print(HEADER)
        result = asyncio.run(load_test(args.onnx_dir.resolve(), texts, args.levels, args.requests, args.max_seconds, args.warmup,
                                       shlex.split(args.server_args)))
    except SlimformerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result["command"] = "python -m eval.load " + shlex.join(argv if argv is not None else sys.argv[1:])
    result["texts_file"] = str(args.texts)
    atomic_write_json(args.out, result)
    failed = sum(r["failed"] for r in result["levels"])
    print(f"{failed} failed requests; results: {args.out} (cpu: {result['cpu']}, {result['cores']} cores)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
