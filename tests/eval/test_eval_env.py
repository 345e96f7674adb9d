"""eval.env: env.json has versions, hardware and threads, and no hostname."""

import json
import socket

from eval import collect_env


def test_collect_env_fields():
    env = collect_env(threads=3)
    assert env["threads"] == 3
    assert env["versions"]["torch"] and env["versions"]["onnxruntime"] and env["versions"]["numpy"]
    assert env["versions"]["slimformer"]
    assert "CPUExecutionProvider" in env["onnxruntime_providers"]
    assert env["n_cores"] >= 1 and env["cpu"]
    assert env["timestamp_utc"].endswith("+00:00")
    assert isinstance(env["cuda_devices"], list)
    text = json.dumps(env)  # serialisable as is
    hostname = socket.gethostname()
    assert len(hostname) < 4 or hostname not in text
