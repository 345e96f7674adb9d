"""Model cards: a README.md in each stage's `model/` folder, the file a user shares with the weights.

Written in the Hugging Face format (YAML metadata between `---` lines, then Markdown; Mitchell
et al. 2019, "Model Cards for Model Reporting"): what the model is, its lineage (each stage's
parent down to the teacher and how it was made), what was measured on the run's test split
(accuracy, agreement, parameters, ONNX size, latency at the headline setting, from
results.json), and how to load it. Rewritten at the end of every run, so it carries the
latest measurements.
"""

from pathlib import Path

import yaml

HEADLINE_BATCH = 8


def lineage(stage: str, stages: dict[str, dict]) -> list[str]:
    """`stage`, its parent, that one's parent ... up to the first stage."""
    chain, seen = [stage], {stage}
    while (parent := stages.get(chain[-1], {}).get("parent")) and parent not in seen:
        chain.append(parent)
        seen.add(parent)
    return chain


def headline_latency(entry: dict) -> dict | None:
    """The CPU ONNX Runtime record at batch 8 (else the largest batch) and the longest length."""
    records = [r for r in entry.get("latency") or [] if r.get("runtime") == "onnxruntime" and r.get("device") == "cpu"]
    if not records:
        return None
    batch = HEADLINE_BATCH if any(r["batch"] == HEADLINE_BATCH for r in records) else max(r["batch"] for r in records)
    return max((r for r in records if r["batch"] == batch), key=lambda r: r["seq_len"])


def percent(value) -> str:
    return f"{100 * value:.2f}%" if value is not None else "not measured"


def render_card(stage: str, results: dict, config: dict) -> str:
    """The README.md of one stage, from the run's results.json and the stage's config.json."""
    stages = {s["name"]: s for s in results["stages"]}
    entry, protocol = stages[stage], results.get("protocol", {})
    labels = list((config.get("id2label") or {}).values())
    meta = {"library_name": "transformers", "pipeline_tag": "text-classification",
            "tags": ["slimformer", "text-classification", entry.get("kind", "")]}
    if entry.get("accuracy") is not None:
        meta["model-index"] = [{"name": f"{results['run']}/{stage}", "results": [{
            "task": {"type": "text-classification"},
            "dataset": {"name": protocol.get("task", ""), "type": protocol.get("task", ""), "split": "test"},
            "metrics": [{"type": "accuracy", "value": round(entry["accuracy"], 5)}] + (
                [{"type": "f1", "name": "macro F1", "value": round(entry["macro_f1"], 5)}]
                if entry.get("macro_f1") is not None else [])}]}]
    steps = " <- ".join(f"{s} ({stages.get(s, {}).get('kind', '?')})" for s in lineage(stage, stages))
    shape = ", ".join(f"{k} {config[k]}" for k in ("dim", "n_layers", "n_heads", "ffn_dim", "cell", "hidden_dim") if k in config)
    latency = headline_latency(entry)
    rows = [
        ("test accuracy (ONNX Runtime)", percent(entry.get("accuracy"))),
        ("macro F1", f"{entry['macro_f1']:.4f}" if entry.get("macro_f1") is not None else "not measured"),
        (f"agreement with {results.get('baseline')}", percent(entry.get("agreement"))),
        ("parameters", f"{entry['params']:,}" if entry.get("params") else "not measured"),
        ("ONNX size", f"{entry['onnx_bytes'] / 1e6:.2f} MB" if entry.get("onnx_bytes") else "not measured"),
        ("p50 latency", f"{latency['p50_ms']:.2f} ms (CPU, ONNX Runtime, batch {latency['batch']}, seq_len {latency['seq_len']}, "
                        f"{latency['threads']} threads)" if latency else "not measured"),
    ]
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", "",
             f"# {results['run']} / {stage}", "",
             f"A text classifier made by slimformer in the run `{results['run']}` "
             f"(`{results.get('command') or 'slimformer run ' + results['run']}`).", "",
             f"- Task: {protocol.get('task', '?')}: {protocol.get('task_description', '')}",
             f"- Labels ({len(labels)}): {', '.join(map(str, labels[:30]))}{' ...' if len(labels) > 30 else ''}",
             f"- Architecture: {config.get('model_type', '?')}; {shape}; inputs up to {config.get('max_len', '?')} tokens",
             f"- Lineage: {steps}", "",
             f"## Measured on the test split ({protocol.get('n_test', '?')} examples)", "",
             "| metric | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows], "",
             "## How to load it", "", "```python",
             "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
             "import compress  # slimformer installed: registers the model type",
             'model = AutoModelForSequenceClassification.from_pretrained("path/to/this/folder")',
             "# without slimformer: from_pretrained(..., trust_remote_code=True) runs the model code saved here",
             'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")', "```", "",
             "The stage's `onnx/` folder beside this one runs in ONNX Runtime alone: "
             "`slimformer predict <onnx folder> \"some text\"`.", ""]
    return "\n".join(lines)


def write_cards(results: dict, run_dir: Path, write) -> list[Path]:
    """Write README.md into every stage's model/ folder that exists; `write(path, text)` is the atomic writer."""
    import json

    written = []
    for entry in results["stages"]:
        folder = run_dir / "stages" / entry["name"] / "model"
        if (folder / "config.json").is_file():
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            write(folder / "README.md", render_card(entry["name"], results, config))
            written.append(folder / "README.md")
    return written
