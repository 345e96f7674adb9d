"""results.json: a run's stages, each with what was measured, under one stated protocol.

The runner (`compress/run/runner.py`) hands over plain values: the stages' recorded fields, the
recipe's task and bench settings, the machine (`eval/env.py`); this module assembles the document
that `eval/results_schema.json` describes, writes it atomically, and writes each stage's model
card beside its weights (`eval/model_card.py`). Reports, `slimformer bench` and `report --check`
read it back with `load_results`, which checks it against the schema first: a file cut short, edited
by hand (a field of the wrong type) or lacking its stages is one error naming the file, what is
wrong and how to write it again, never a traceback.
"""

import json
from functools import cache
from pathlib import Path
from typing import Any

from eval.errors import SlimformerError
from eval.io import atomic_write_json, atomic_write_text
from eval.model_card import write_cards

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("results_schema.json")
BENCH_PROTOCOL = ("batch_sizes", "seq_lens", "threads", "warmup", "repeats")  # what `slimformer bench RUN` re-times with


def build_protocol(*, task: dict, bench: dict, env: dict, timing: dict, interleaved: bool, devices: list[str],
                   peak: dict | None, traffic: dict | None) -> dict:
    """The protocol entry: what every number of the run was measured on.

    `task`: name, description, n_test, seq_len, truncated, data; `bench`: the recipe's bench section
    (batch_sizes, seq_lens, threads, warmup, repeats)."""
    return {
        "task": task["name"],
        "task_description": task["description"],
        "split": "test",
        "n_test": task["n_test"],
        "seq_len": task["seq_len"],
        "batch_sizes": bench["batch_sizes"],
        "seq_lens": bench.get("seq_lens") or [task["seq_len"]],
        "threads": bench["threads"],
        "warmup": bench["warmup"],
        "repeats": bench["repeats"],
        "interleaved": interleaved,
        "timing": timing,
        "devices": devices,
        "truncated": task.get("truncated", {}),
        "data": task.get("data"),  # rows dropped and texts cut when the task's files were read (compress/data/files.py)
        "versions": env.get("versions", {}),
        "cpu": f"{env.get('cpu')} ({env.get('n_cores_usable')} usable cores)",
        "cpu_features": env.get("cpu_features"),
        "gpu": ", ".join(env.get("cuda_devices") or []) or None,
        "peak": peak,
        "traffic": traffic,
    }


def write_results(run_dir: Path, *, run: str, command: str, protocol: dict, baseline: str | None,
                  stages: list[dict[str, Any]]) -> Path:
    """Write `run_dir/results.json` and every stage's model card; returns the results path."""
    results = {"schema_version": SCHEMA_VERSION, "run": run, "command": command, "protocol": protocol,
               "baseline": baseline, "stages": stages}
    path = run_dir / "results.json"
    atomic_write_json(path, results)
    write_cards(results, run_dir, atomic_write_text)  # each model/ folder's README.md, with these measurements
    return path


def load_results(run_dir: str | Path, bench: bool = False) -> dict:
    """Read `run_dir/results.json` and check it against eval/results_schema.json; SlimformerError naming the file,
    the field and the fix when it is unusable. `bench`: it must also hold what `slimformer bench RUN` re-times with."""
    run_dir = Path(run_dir)
    path = run_dir / "results.json"
    recipe = run_dir / "recipe.yaml"
    rewrite = (f"write it again with `slimformer run {recipe}` (finished steps are cached: nothing retrains)" if recipe.is_file()
               else "write it again by re-running the recipe that made the run (finished steps are cached)")
    if not path.is_file():
        raise SlimformerError(f"{path} not found: pass a run folder written by `slimformer run` (runs/<name>)")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SlimformerError(f"{path} is not valid JSON ({e}; cut short or edited?); {rewrite}") from None
    if isinstance(results, dict) and results.get("schema_version", 1) != SCHEMA_VERSION:
        raise SlimformerError(f"{path} has schema_version {results['schema_version']}; this slimformer reads version "
                              f"{SCHEMA_VERSION}: {rewrite}")
    problems = schema_problems(results, results_schema())
    if problems:
        raise SlimformerError(f"{path} does not match eval/results_schema.json: {'; '.join(problems)}; {rewrite}")
    if not results["stages"]:
        raise SlimformerError(f"{path} lists no stages; {rewrite}")
    if bench:
        protocol = results.get("protocol") or {}
        missing = [k for k in BENCH_PROTOCOL if protocol.get(k) is None]
        if missing:
            raise SlimformerError(f"{path} has no protocol {', '.join(missing)} (an earlier slimformer wrote it, or it was "
                                  f"edited), which `slimformer bench` re-times with; {rewrite}, then "
                                  f"`slimformer bench {run_dir}`")
    return results


@cache
def results_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


JSON_TYPES = {"object": dict, "array": list, "string": str, "integer": int, "number": (int, float), "boolean": bool,
              "null": type(None)}


def schema_problems(value: Any, schema: dict, where: str = "", limit: int = 3) -> list[str]:
    """What breaks `schema` (the JSON Schema keywords results_schema.json uses) in `value`, at most `limit`,
    each as 'stages[0].accuracy is a string ('high'), not number or null'."""
    out: list[str] = []
    check_node(value, schema, where, schema.get("$defs", {}), out, limit)
    return out


def check_node(value: Any, node: dict, where: str, defs: dict, out: list[str], limit: int) -> None:
    if len(out) >= limit:
        return
    if "$ref" in node:
        check_node(value, defs[node["$ref"].rsplit("/", 1)[-1]], where, defs, out, limit)
    name = where or "the file"
    types = node.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types
        if not any(isinstance(value, JSON_TYPES[t]) and not (isinstance(value, bool) and t in ("integer", "number"))
                   for t in types):
            out.append(f"{name} is {type_name(value)} ({json.dumps(value)[:40]}), not {' or '.join(types)}")
            return
    if "enum" in node and value not in node["enum"]:
        out.append(f"{name} is {json.dumps(value)[:40]}, not one of {node['enum']}")
    if "const" in node and value != node["const"]:
        out.append(f"{name} is {json.dumps(value)[:40]}, not {node['const']!r}")
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if number and ("minimum" in node and value < node["minimum"] or "maximum" in node and value > node["maximum"]):
        out.append(f"{name} is {value}, outside [{node.get('minimum', '-inf')}, {node.get('maximum', 'inf')}]")
    if isinstance(value, str) and len(value) < node.get("minLength", 0):
        out.append(f"{name} is an empty string")
    if isinstance(value, list):
        if not node.get("minItems", 0) <= len(value) <= node.get("maxItems", len(value)):
            out.append(f"{name} has {len(value)} items")
        for i, item in enumerate(value if "items" in node else ()):
            check_node(item, node["items"], f"{where}[{i}]", defs, out, limit)
    if isinstance(value, dict):
        missing = [k for k in node.get("required", ()) if k not in value]
        if missing:
            out.append(f"{name} lacks {', '.join(missing)}")
        properties, extra = node.get("properties", {}), node.get("additionalProperties", True)
        for key, item in value.items():
            sub = properties.get(key, extra if isinstance(extra, dict) else None)
            if sub is not None:
                check_node(item, sub, f"{where}.{key}" if where else str(key), defs, out, limit)
            elif extra is False:
                out.append(f"{name} has an unknown field {key!r}")


def type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")
