"""The summary of `eval/gpu_check.sh`: what ran, what passed, and the numbers, in one page.

    python -m eval.gpu_summary runs/gpu_check      # prints and writes runs/gpu_check/summary.md

Reads what the script left in its folder: `status.tsv` (part, exit status or "skipped", seconds,
reason), the shrunk base_gpu run's `runs/base_gpu/results.json` and the scaling benchmark's
`scaling/scaling.md`. The latency table puts every runtime of a stage side by side at the
headline length: ONNX Runtime CPU (fp32 or int8), eager torch CPU fp32 and, on a GPU, torch
CUDA fp32/fp16/bf16, one column per (runtime, device, precision, batch); with the fp16 ONNX
artifact's parity and the fraction of the MatMul peak the CPU artifact reaches (eval/report.py).
Exits 1 when a part failed, so the script's exit status says whether the check passed.
"""

import json
import sys
from pathlib import Path

from eval.report import Row, headline_setting, peak_fraction, peak_text

SUMMARY_FILE = "summary.md"


def read_status(folder: Path) -> list[list[str]]:
    path = folder / "status.tsv"
    return [line.split("\t") for line in path.read_text().splitlines() if line] if path.is_file() else []


def parts_table(status: list[list[str]]) -> list[str]:
    lines = ["| part | result | seconds |", "|---|---|---:|"]
    for fields in status:
        name, rc, seconds = fields[:3]
        result = f"skipped: {fields[3]}" if rc == "skipped" else "passed" if rc == "0" else f"FAILED (exit {rc}; see {name}.log)"
        lines.append(f"| {name} | {result} | {seconds} |")
    return lines


def latency_table(results: dict) -> list[str]:
    """Stages x (runtime device precision, batch) p50 ms at the longest benchmarked length."""
    stages = results.get("stages") or []
    records = [r for s in stages for r in s.get("latency") or []]
    if not records:
        return ["(no latency records)"]
    seq_len = max(r["seq_len"] for r in records)
    keys = sorted({(r["runtime"], r["device"], r.get("precision") or "fp32", r["batch"])
                   for r in records if r["seq_len"] == seq_len},
                  key=lambda k: (k[1], k[0], k[2], k[3]))
    setting = headline_setting([Row(s["name"], s) for s in stages])
    header = [f"{rt} {dev} {prec} b{b}" for rt, dev, prec, b in keys]
    lines = [f"p50 ms at seq_len {seq_len}; % of peak: the CPU ONNX Runtime artifact at batch "
             f"{setting[0] if setting else '—'}.", "",
             "| stage | accuracy | " + " | ".join(header) + " | % of peak | fp16 ONNX parity |",
             "|---|---:|" + "---:|" * len(keys) + "---:|---|"]
    protocol = results.get("protocol") or {}
    for stage in stages:
        by_key = {(r["runtime"], r["device"], r.get("precision") or "fp32", r["batch"]): r["p50_ms"]
                  for r in stage.get("latency") or [] if r["seq_len"] == seq_len}
        cells = [f"{by_key[k]:.2f}" if k in by_key else "—" for k in keys]
        fraction = peak_fraction(Row(stage["name"], stage, protocol), setting)
        parity = stage.get("parity_fp16")
        parity_text = f"{parity['max_abs_diff']:.2g} ≤ {parity['atol']:g}" if parity else "—"
        accuracy = f"{100 * stage['accuracy']:.2f}" if stage.get("accuracy") is not None else "—"
        lines.append(f"| {stage['name']} | {accuracy} | " + " | ".join(cells) +
                     f" | {'—' if fraction is None else f'{100 * fraction:.1f}'} | {parity_text} |")
    return lines


def summarise(folder: Path) -> tuple[str, bool]:
    """The page's Markdown and whether every part that ran passed."""
    status = read_status(folder)
    passed = all(fields[1] in ("0", "skipped") for fields in status)
    lines = ["# GPU check", "", f"Result: {'passed' if passed else 'FAILED'}", "", *parts_table(status), ""]
    results_path = folder / "runs" / "base_gpu" / "results.json"
    if results_path.is_file():
        results = json.loads(results_path.read_text())
        protocol = results.get("protocol") or {}
        lines += ["## base_gpu (shrunk)", "", f"`{results.get('command')}`", "",
                  f"CPU: {protocol.get('cpu')}; GPU: {protocol.get('gpu') or 'none'}; threads {protocol.get('threads')}; "
                  f"MatMul peak: {peak_text(protocol.get('peak'))}", "", *latency_table(results), ""]
    scaling = folder / "scaling" / "scaling.md"
    if scaling.is_file():
        body = scaling.read_text().splitlines()
        lines += ["## Scaling (bench --scaling)", "", *[line for line in body if not line.startswith("# ")], ""]
    return "\n".join(lines), passed


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: python -m eval.gpu_summary FOLDER (the folder eval/gpu_check.sh wrote)", file=sys.stderr)
        return 2
    folder = Path(argv[0])
    text, passed = summarise(folder)
    (folder / SUMMARY_FILE).write_text(text + "\n", encoding="utf-8")
    print(text)
    print(f"\nsummary: {folder / SUMMARY_FILE}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
