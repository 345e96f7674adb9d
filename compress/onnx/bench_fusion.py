"""Fused vs unfused attention in ONNX Runtime, and ONNX Runtime vs eager torch, timed in interleaved rounds.

    nice -n 19 python -m compress.onnx.bench_fusion [--dim 128 --n-layers 2 --batch 8 --seq-lens 48 128 512 --repeats 15]

A random-weight Slimformer of the quickstart's shape (size mini: dim 128, 4 heads, ffn 512,
2 layers; weights do not change the time) is exported twice, with and without
`compress/onnx/fuse_graph.py`, and each (runtime, cell) is timed by `eval.interleave.time_in_rounds`
with the bench's own settings (`eval.bench.ort_session`: the timed session spins, ORT_ENABLE_ALL; torch
under inference_mode with the same threads). Prints p50 ms and the ratios. Not a test: numbers
depend on the machine and its load.
"""

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from compress.models import SlimformerConfig, SlimformerForSequenceClassification  # noqa: E402
from compress.onnx.export import ExportOptions, export_stage  # noqa: E402
from eval.bench import make_inputs, ort_runner, ort_session  # noqa: E402
from eval.interleave import time_in_rounds, torch_runner  # noqa: E402


class NoTokenizer:
    def save_pretrained(self, folder):
        pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--n-heads", type=int, default=4)
    p.add_argument("--n-layers", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq-lens", type=int, nargs="+", default=[48, 128, 512])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args()
    config = SlimformerConfig(vocab_size=8000, max_len=max(args.seq_lens), dim=args.dim, n_layers=args.n_layers,
                              n_heads=args.n_heads, ffn_dim=4 * args.dim, num_labels=26, dropout=0.0)
    torch.manual_seed(0)
    model = SlimformerForSequenceClassification(config).eval()
    ids = torch.randint(5, 8000, (4, 16))
    mask = torch.ones_like(ids)
    mask[0, 8:] = 0
    work = Path(tempfile.mkdtemp())
    paths = {}
    for fuse in (False, True):
        report = export_stage(model, NoTokenizer(), work / f"fuse{fuse}", (ids, mask), ExportOptions(fuse=fuse))
        paths["fused" if fuse else "unfused"] = work / f"fuse{fuse}" / "model.onnx"
        print(f"export fuse={fuse}: fusions {report['fusions']}, parity {report['max_abs_diff']:.2g}")
    feeds = {(args.batch, t): make_inputs(args.batch, t, 8000) for t in args.seq_lens}

    def ort_entry(path):
        def open_():
            session = ort_session(path, args.threads)
            return {cell: ort_runner(session, feed, "cpu") for cell, feed in feeds.items()}
        return open_

    entries = {name: ort_entry(path) for name, path in paths.items()}
    entries["torch"] = lambda: {cell: torch_runner(model, feed) for cell, feed in feeds.items()}
    torch.set_num_threads(args.threads)
    stats = time_in_rounds(entries, args.warmup, args.repeats)
    print(f"\np50 ms, batch {args.batch}, threads {args.threads}, {args.repeats} timed calls per cell in rounds")
    print(f"{'seq_len':>8} {'torch':>9} {'ort unfused':>12} {'ort fused':>10} {'fused/unfused':>14} {'torch/ort fused':>16}")
    for cell in feeds:
        t, u, f = (stats[name][cell]["p50_ms"] for name in ("torch", "unfused", "fused"))
        print(f"{cell[1]:>8} {t:>9.2f} {u:>12.2f} {f:>10.2f} {u / f:>13.2f}x {t / f:>15.2f}x")


if __name__ == "__main__":
    main()
