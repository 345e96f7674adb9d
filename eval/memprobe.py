"""Peak-memory probe: load one ONNX model in ONNX Runtime, run one batch, print memory as JSON.

Run by `eval.bench.peak_memory` in a fresh process, because a process's peak resident set
size never goes down: measured in the parent it would include everything the parent ever
did. This module must stay light: it imports neither torch nor `eval.bench`.

    python -m eval.memprobe stages/teacher/onnx/model.onnx --batch 8 --seq-len 64 --threads 2

prints one line: {"peak_rss_bytes": ..., "baseline_rss_bytes": ..., "model_rss_bytes": ...}.
"""

import argparse
import json
import resource
import sys
from pathlib import Path

FIRST_TOKEN_ID = 5  # a valid non-special id in every vocabulary; memory does not depend on the values
PROC_STATUS = Path("/proc/self/status")
# ru_maxrss is in KiB on Linux and in bytes on macOS.
MAXRSS_UNIT = {"darwin": 1}


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far, in bytes.

    On Linux this is `VmHWM` from /proc/self/status, not `ru_maxrss`: the kernel carries
    `ru_maxrss` over from the parent through fork/vfork + exec, so a probe started by a
    process holding 500 MB would report at least 500 MB. `VmHWM` belongs to the new
    address space alone. Elsewhere (macOS) `ru_maxrss` is all there is.
    """
    if PROC_STATUS.is_file():
        for line in PROC_STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # "VmHWM:   123456 kB"
    unit = MAXRSS_UNIT.get(sys.platform, 1024)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit


def probe(onnx_path: str, batch: int, seq_len: int, threads: int, provider: str) -> dict:
    """Import onnxruntime, note the peak RSS, load the model, run one batch, note it again."""
    import numpy as np
    import onnxruntime as ort

    baseline = peak_rss_bytes()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    providers = list(dict.fromkeys([provider, "CPUExecutionProvider"]))
    session = ort.InferenceSession(onnx_path, sess_options=options, providers=providers)
    feeds = {
        "input_ids": np.full((batch, seq_len), FIRST_TOKEN_ID, dtype=np.int64),
        "attention_mask": np.ones((batch, seq_len), dtype=np.int64),
    }
    session.run(None, feeds)  # every output: logits, or a sentence embedding
    peak = peak_rss_bytes()
    return {"peak_rss_bytes": peak, "baseline_rss_bytes": baseline, "model_rss_bytes": peak - baseline}


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, probe, print one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m eval.memprobe", description=__doc__.splitlines()[0])
    parser.add_argument("onnx_path")
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--seq-len", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--provider", default="CPUExecutionProvider")
    args = parser.parse_args(argv)
    print(json.dumps(probe(args.onnx_path, args.batch, args.seq_len, args.threads, args.provider)))


if __name__ == "__main__":
    main()
