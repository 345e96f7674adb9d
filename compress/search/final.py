"""The end of a search: the front, the choice, the test split scored for the front only, `best.yaml`, the report.

Runs whatever way the search stopped (completed, time limit, interrupted), so a search never ends
empty: the front of the full-fidelity candidates found so far, the chosen one (or the nearest to
the budget, marked with what it misses and by how much), its artifacts in `chosen/`, its recipe in
`best.yaml`, and `search.json` + the report. When no candidate reached full fidelity, nothing is
chosen (cheap estimates are never chosen): `best.yaml` then holds the most promising cheap
candidate's pipeline at full recovery, not yet run, and the summary says so.

The test split is read here for the first time: the front's artifacts and the teacher's are scored
on it (each with its tokenizer, as a user would run it), with a Wilson interval for each accuracy
and a paired bootstrap interval for each difference with the teacher (`eval/intervals.py`).
"""

import json
import shutil
import time
from pathlib import Path

import numpy as np
import yaml

from compress.io import atomic_write_json, atomic_write_text
from compress.search.front import choose, pareto_front, spearman

CHOSEN = "chosen"


def finish(search) -> None:
    """Write everything the search leaves behind (see the module docstring)."""
    cfg, say = search.cfg, search.say
    full = ([e for (n, f), e in search.done.items() if f == "full" and e.get("state") == "complete"]
            if hasattr(search, "done") else [])
    points = [{**e["result"], "trial": e["number"]} for e in full]
    front = pareto_front(points, cfg.budget.cost)
    chosen, missed = choose(points, cfg.budget, search.teacher_acc)
    scored = score_on_test(search, [p["trial"] for p in front], full)
    summary = {"trial": None}
    if chosen is not None:
        entry = next(e for e in full if e["number"] == chosen["trial"])
        summary = chosen_summary(search, entry, chosen, missed, scored)
        copy_chosen(search, entry)
        write_best(search, entry["result"]["steps"], "full")
    else:
        pending = best_cheap(search)
        if pending is not None:
            write_best(search, pending, "cheap")
        summary["note"] = ("no candidate reached full recovery before the search stopped; best.yaml holds the most promising "
                           "cheap candidate's pipeline at full recovery, not yet run" if pending else "no candidate was built")
    result = search_document(search, front, summary, scored)
    atomic_write_json(search.dir / "search.json", result)
    try:
        from eval.search_report import write_search_report

        md, html = write_search_report(search.dir)
        say(f"report: {html}")
    except ImportError:  # the report module is optional while it is being written
        pass
    met = result["budgets_met"]
    say(f"search {result['ended']}: " + (f"chosen trial {summary['trial']} ({'meets' if not missed else 'misses'} the budget)"
                                        if summary.get("trial") is not None else summary.get("note", "")))
    say(f"budgets met: {met}")


# --------------------------------------------------------------------------- test scoring


def score_on_test(search, trials: list[int], full: list[dict]) -> dict:
    """Test accuracy (with intervals) of the teacher and of each trial of the front: the only time the test split is read."""
    from compress.data import load_task
    from compress.run.config import validate_recipe
    from eval.intervals import accuracy_fields, delta_fields

    if not trials:
        return {}
    recipe = validate_recipe(search.trunk, "the search's teacher recipe")  # the real test file, not the blind one
    data = load_task(recipe.task, seed=recipe.seed, base_dir=Path.cwd())
    texts, labels = data.texts["test"], np.asarray(data.labels["test"])
    seq_len = recipe.task.seq_len
    teacher_pred = predict_folder(search.teacher_onnx, texts, seq_len, search.cfg.threads)
    out = {"teacher": {"test_accuracy": float((teacher_pred == labels).mean()), **fields(accuracy_fields(teacher_pred, labels)),
                       "n_test": int(len(labels))}}
    by_number = {e["number"]: e for e in full}
    for number in trials:
        onnx_dir = search.dir / by_number[number]["result"]["onnx_dir"]
        pred = predict_folder(onnx_dir, texts, seq_len, search.cfg.threads)
        delta = delta_fields(pred, teacher_pred, labels, "teacher")["accuracy_delta"]
        out[number] = {"test_accuracy": float((pred == labels).mean()), **fields(accuracy_fields(pred, labels)),
                       "delta_vs_teacher": {"points": 100 * delta["delta"], "ci": [100 * delta["ci"][0], 100 * delta["ci"][1]],
                                            "contains_zero": delta["contains_zero"], "mcnemar_p": delta["mcnemar_p"]}}
    return out


def fields(accuracy: dict) -> dict:
    return {"test_accuracy_ci": accuracy["accuracy_ci"]}


def predict_folder(onnx_dir: Path, texts: list[str], seq_len: int, threads: int) -> np.ndarray:
    """Predicted class ids of an ONNX folder on `texts`, tokenized by the folder's own tokenizer."""
    from transformers import PreTrainedTokenizerFast

    from compress.data import encode
    from eval.accuracy import predict_onnx

    tokenizer = PreTrainedTokenizerFast.from_pretrained(onnx_dir)
    encoded = encode(tokenizer, texts, seq_len)
    return predict_onnx(onnx_dir / "model.onnx", encoded["input_ids"], encoded["attention_mask"], threads=threads).argmax(-1)


# --------------------------------------------------------------------------- the chosen model


def chosen_summary(search, entry: dict, chosen: dict, missed: list[dict], scored: dict) -> dict:
    test = scored.get(entry["number"], {})
    return {
        "trial": entry["number"], "meets_budget": not missed, "missed": [{k: v for k, v in m.items() if k != "relative"}
                                                                            for m in missed],
        "val_accuracy": chosen["accuracy"], "test_accuracy": test.get("test_accuracy"),
        "test_accuracy_ci": test.get("test_accuracy_ci"), "delta_vs_teacher": test.get("delta_vs_teacher"),
        "latency_ms": chosen["latency_ms"], "speedup": search.teacher_latency / chosen["latency_ms"],
        "onnx_bytes": chosen["bytes"], "size_ratio": search.teacher_bytes / chosen["bytes"],
        "onnx_dir": f"{CHOSEN}/onnx", "best_yaml": "best.yaml", "steps": entry["steps_described"],
        "epochs": entry.get("epochs"),
    }


def copy_chosen(search, entry: dict) -> None:
    """The chosen artifact (and its last torch model, when it has one) into `chosen/`."""
    target = search.dir / CHOSEN
    shutil.rmtree(target, ignore_errors=True)
    onnx_dir = search.dir / entry["result"]["onnx_dir"]
    shutil.copytree(onnx_dir, target / "onnx")
    model_dir = onnx_dir.parent / "model"
    if model_dir.is_dir():
        shutil.copytree(model_dir, target / "model")


def best_recipe(search, steps: list[dict]) -> dict:
    """The chosen pipeline as a plain recipe: the teacher (the real test file) scored and benchmarked, the steps, a test
    evaluation and a bench."""
    renamed, out = {}, []
    for step in steps:
        step = json.loads(json.dumps(step))
        if "name" in step and "." in step["name"]:
            renamed[step["name"]] = step["name"].split(".", 1)[1]
            step["name"] = renamed[step["name"]]
        if step.get("parent") in renamed:
            step["parent"] = renamed[step["parent"]]
        out.append(step)
    with_test = []
    for step in out:
        with_test.append(step)
        if step["kind"] == "evaluate":  # beside each validation score, the test score
            with_test.append({"kind": "evaluate", "split": "test"})
    with_test.append({"kind": "bench"})
    trunk = json.loads(json.dumps(search.trunk))
    trunk["name"] = f"{search.name}-best"
    # the teacher scored on test and benchmarked too, so the run's report and `slimformer bench` compare the two
    trunk["steps"] = trunk["steps"] + [{"kind": "evaluate", "split": "test"}, {"kind": "bench"}] + with_test
    trunk["bench"] = {"threads": search.cfg.threads, "batch_sizes": [search.cfg.batch_size]}
    return trunk


def write_best(search, steps: list[dict], fidelity: str) -> None:
    recipe = best_recipe(search, steps)
    head = ("# The pipeline `slimformer compress` chose, as a plain recipe: "
            "`slimformer run best.yaml` rebuilds it from the teacher.\n"
            if fidelity == "full" else
            "# No candidate reached full recovery before the search stopped: the most promising cheap candidate's pipeline,\n"
            "# at full recovery, not yet run. `slimformer run best.yaml` builds it.\n")
    atomic_write_text(search.dir / "best.yaml", head + f"# search: {search.dir / 'search.json'}\n"
                      + yaml.safe_dump(recipe, sort_keys=False))


def best_cheap(search) -> list[dict] | None:
    """The steps of the best cheap candidate under the budget's hard caps (by accuracy), at full recovery: epochs, no caps."""
    cheap = [e for (n, f), e in getattr(search, "done", {}).items() if f == "cheap" and e.get("state") == "complete"]
    if not cheap:
        return None
    best = max(cheap, key=lambda e: e["result"]["accuracy"])
    steps = json.loads(json.dumps(best["result"]["steps"]))
    for step in steps:
        for part in (step, step.get("recover") or {}):
            part.pop("max_steps", None)
    return steps


# --------------------------------------------------------------------------- search.json


def search_document(search, front: list[dict], chosen: dict, scored: dict) -> dict:
    from eval.env import collect_env

    cfg, b = search.cfg, search.cfg.budget
    env = collect_env(cfg.threads)
    trials = []
    numbers = sorted({n for (n, _) in getattr(search, "done", {})})
    for n in numbers:
        cheap, full = search.done.get((n, "cheap")), search.done.get((n, "full"))
        base = cheap or full
        trials.append({
            "id": n, "family": base.get("family"), "params": base.get("params"), "shape": base.get("shape"),
            "steps": base.get("steps_described"), "state": (full or cheap).get("state"), "skipped": base.get("skipped"),
            "error": (full or cheap).get("error"), "predicted": {"latency_ms": (base.get("predicted") or {}).get("latency_ms"),
                                                                 "onnx_bytes": (base.get("predicted") or {}).get("bytes")},
            "cheap": point(cheap), "full": point(full), "epochs": (full or {}).get("epochs"),
        })
    both = [t for t in trials if t["cheap"] and t["full"]]
    rho = spearman([t["cheap"]["val_accuracy"] for t in both], [t["full"]["val_accuracy"] for t in both])
    met = budgets_met(search, chosen)
    n_front = len(front)
    return {
        "schema": "slimformer-search/1", "name": search.name, "command": cfg.command, "ended": search.ended,
        "teacher": {"folder": str(search.trunk["teacher"].get("from") or cfg.teacher), "val_accuracy": search.teacher_acc,
                    "test_accuracy": scored.get("teacher", {}).get("test_accuracy"),
                    "test_accuracy_ci": scored.get("teacher", {}).get("test_accuracy_ci"),
                    "latency_ms": search.teacher_latency, "onnx_bytes": search.teacher_bytes,
                    "params": getattr(search, "teacher_params", None)},
        "budget": {"max_drop": b.max_drop, "max_drop_relative": b.relative, "min_val_accuracy": search.floor,
                   "minimize": b.minimize, "max_latency_ms": b.max_latency_ms, "max_mb": b.max_mb,
                   "batch_size": cfg.batch_size, "seq_len": search.seq_len, "threads": cfg.threads, "time_s": cfg.time_s},
        "protocol": {"cpu": f"{env.get('cpu')} ({env.get('n_cores_usable')} usable cores)",
                     "cpu_features": env.get("cpu_features"), "versions": env.get("versions"), "threads": cfg.threads},
        "phases": [{"name": k, "seconds": v} for k, v in search.phase_seconds.items()],
        "sensitivity": getattr(search, "sensitivity", None),
        "latency_model": latency_summary(search),
        "trials": trials,
        "front": [p["trial"] for p in front],
        "front_test": [{"trial": n, **scored[n]} for n in (p["trial"] for p in front) if n in scored],
        "chosen": chosen,
        "spearman": rho,
        "budgets_met": met,
        "test_reads": (f"the test split was scored only for the {n_front} candidate{'s' if n_front != 1 else ''} of the final "
                       "front and the teacher, after the search chose on validation" if n_front else
                       "the test split was not scored: no candidate reached full recovery"),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def point(entry: dict | None) -> dict | None:
    if not entry or entry.get("state") != "complete":
        return None
    r = entry["result"]
    return {"val_accuracy": r["accuracy"], "latency_ms": r["latency_ms"], "onnx_bytes": r["bytes"], "seconds": r["seconds"],
            "onnx_dir": r["onnx_dir"]}


def latency_summary(search) -> dict | None:
    report = getattr(search, "latency_report", None)
    if report is None:
        return None
    held = report.get("holdout") or {}
    return {"n_fit": report.get("fit_points"), "key": report.get("key"), "features": report.get("features"),
            "holdout": [{"shape": r["shape"], "precision": r["int8"] or "fp32", "predicted_ms": r["predicted_ms"],
                         "measured_ms": r["measured_ms"]} for r in held.get("points", [])],
            "median_abs_error": {k: held.get(k) for k in ("fp32", "int8", "dynamic", "static")},
            "candidates": candidate_latency_errors(search)}


def candidate_latency_errors(search) -> list[dict]:
    """Each built candidate's predicted latency against the latency it measured (its artifact, after training)."""
    out = []
    for (number, fidelity), e in sorted(getattr(search, "done", {}).items()):
        if e.get("state") == "complete" and (e.get("predicted") or {}).get("latency_ms"):
            out.append({"trial": number, "fidelity": fidelity, "predicted_ms": e["predicted"]["latency_ms"],
                        "measured_ms": e["result"]["latency_ms"], "family": e.get("family")})
    return out


def budgets_met(search, chosen: dict) -> dict:
    b = search.cfg.budget
    if chosen.get("trial") is None:
        return {"accuracy": None if b.max_drop is None else False, "latency": None if b.max_latency_ms is None else False,
                "size": None if b.max_mb is None else False}
    missed = {m["budget"] for m in chosen.get("missed", [])}
    return {"accuracy": None if b.max_drop is None else "max_drop" not in missed,
            "latency": None if b.max_latency_ms is None else "max_latency_ms" not in missed,
            "size": None if b.max_mb is None else "max_mb" not in missed}
