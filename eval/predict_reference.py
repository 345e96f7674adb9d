"""`slimformer predict --input` against the transformers pipeline a user would otherwise run (issue 28's benchmark).

    python -m eval.predict_reference --onnx runs/minilm_vader/stages/kd.int8/onnx \
        --reference runs/minilm_vader/stages/teacher/model --input data/vader/test.csv --max-length 64

Both sides read the same texts in file order and pay for tokenization:
- slimformer: `slimformer predict ONNX_DIR --input FILE --output OUT.jsonl --batch-size 32 --threads T` in a process of
  its own; its own "texts/s" line is read (model loading not counted, the file's reading and writing counted);
- reference: `pipeline("text-classification", model=REFERENCE, trust_remote_code=True, device=-1, batch_size=32,
  truncation=True, max_length=64)` under `torch.set_num_threads(T)`, in a process of its own, the pipeline built
  before the clock starts, the texts given as one list (the pipeline batches them itself).
The two alternate for `--rounds` rounds (each round runs both, the order rotated) and the median rate of each is
compared, so a change in the machine's load falls on both. eval never imports compress: slimformer runs through
its CLI (cli.py beside this package).
"""

import argparse
import csv
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CLI = Path(__file__).resolve().parents[1] / "cli.py"

# the reference, run as `python -c` in a fresh process: prints one JSON line {"n": ..., "seconds": ...}
REFERENCE = """
import json, sys, time
import torch
from transformers import pipeline
model, path, threads, batch, max_length = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
texts = json.load(open(path, encoding="utf-8"))
pipe = pipeline("text-classification", model=model, trust_remote_code=True, device=-1, batch_size=batch,
                truncation=True, max_length=max_length)
pipe(texts[:batch])  # warm-up batch, as predict's first chunk also pays for ONNX Runtime's first run
start = time.perf_counter()
out = pipe(texts)
seconds = time.perf_counter() - start
assert len(out) == len(texts)
print(json.dumps({"n": len(texts), "seconds": seconds}))
"""

RATE = re.compile(r"([\d,]+) texts in ([\d.]+) s")


def read_texts(path: Path, column: str) -> list[str]:
    """The texts of a .txt (one per line) or .csv file (`column`), in file order."""
    if path.suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as f:
            return [row[column] for row in csv.DictReader(f)]
    return [line.rstrip("\n") for line in path.open(encoding="utf-8") if line.strip()]


def time_slimformer(onnx_dir: str, texts_file: Path, out: Path, threads: int, batch: int) -> float:
    """Texts per second that `slimformer predict --input` prints."""
    cmd = [sys.executable, str(CLI), "predict", onnx_dir, "--input", str(texts_file), "--output", str(out),
           "--batch-size", str(batch), "--threads", str(threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    match = RATE.search(done.stdout)
    if match is None:
        raise RuntimeError(f"no rate in the output of {' '.join(cmd)}:\n{done.stdout}\n{done.stderr}")
    return int(match.group(1).replace(",", "")) / float(match.group(2))


def time_reference(model: str, texts_json: Path, threads: int, batch: int, max_length: int) -> float:
    """Texts per second of the transformers text-classification pipeline."""
    cmd = [sys.executable, "-c", REFERENCE, model, str(texts_json), str(threads), str(batch), str(max_length)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    record = json.loads(done.stdout.strip().splitlines()[-1])
    return record["n"] / record["seconds"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnx", required=True, help="the slimformer stage's ONNX folder")
    parser.add_argument("--reference", required=True, help="the torch model folder the pipeline loads (the teacher)")
    parser.add_argument("--input", required=True, type=Path, help=".txt (one text per line) or .csv")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    texts = read_texts(args.input, args.text_column)
    with tempfile.TemporaryDirectory() as tmp:
        texts_txt, texts_json = Path(tmp) / "texts.txt", Path(tmp) / "texts.json"
        # one text per line for predict: a line break inside a text becomes a space on both sides
        texts = [" ".join(t.split()) for t in texts]
        texts_txt.write_text("\n".join(texts) + "\n", encoding="utf-8")
        texts_json.write_text(json.dumps(texts), encoding="utf-8")
        ours, theirs = [], []
        for r in range(args.rounds):
            runs = [lambda: ours.append(time_slimformer(args.onnx, texts_txt, Path(tmp) / "out.jsonl", args.threads,
                                                        args.batch_size)),
                    lambda: theirs.append(time_reference(args.reference, texts_json, args.threads, args.batch_size,
                                                         args.max_length))]
            for run in runs[r % 2:] + runs[: r % 2]:
                run()
    result = {"texts": len(texts), "threads": args.threads, "batch_size": args.batch_size, "max_length": args.max_length,
              "slimformer_texts_per_s": ours, "reference_texts_per_s": theirs,
              "speedup_median": statistics.median(ours) / statistics.median(theirs)}
    print(json.dumps(result))
    print(f"slimformer predict {statistics.median(ours):,.0f} texts/s, transformers pipeline "
          f"{statistics.median(theirs):,.0f} texts/s: {result['speedup_median']:.1f}x (median of {args.rounds} rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
