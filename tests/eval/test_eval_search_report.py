"""The search report (eval/search_report.py) on hand-made search.json files: a completed search, one stopped by
its time limit whose chosen candidate misses the budget, one with no full-fidelity trial yet, and broken files.

Each page is rendered once per module (figures cost ~0.3 s each) and its Markdown and HTML checked for the
numbers and sentences a reader needs; the schema is checked with jsonschema against the report's own validator.
"""

import base64
import json
import re
from pathlib import Path

import jsonschema
import pytest

from eval.errors import ReportError
from eval.search_report import SCHEMA_FILE, load_search, main, write_search_report

TEACHER = {"folder": "runs/minilm_vader/stages/teacher/model", "val_accuracy": 0.91, "test_accuracy": 0.918,
           "test_accuracy_ci": [0.90, 0.935], "latency_ms": 74.7, "onnx_bytes": 90_490_000, "params": 22_600_000}
# (id, family, n_layers, dim, int8, cheap val, full val, predicted ms, measured ms, MB)
TRIALS = [(0, "transformer", 6, 384, None, 0.90, 0.905, 38.0, 40.0, 60.0),
          (1, "transformer", 4, 384, None, 0.87, 0.90, 27.0, 25.0, 40.0),
          (2, "transformer", 3, 256, "dynamic", 0.85, 0.893, 9.0, 9.5, 8.0),
          (3, "transformer", 3, 192, "dynamic", 0.86, 0.89, 6.1, 6.2, 4.51),
          (4, "transformer", 2, 192, "dynamic", 0.80, 0.86, 4.4, 4.1, 3.6),
          (5, "gru", None, 128, None, 0.78, 0.84, 1.4, 1.5, 2.1),
          (6, "boe", None, 64, None, 0.75, 0.80, 0.45, 0.4, 1.2),
          (7, "lstm", None, 128, "static", 0.81, 0.855, 2.2, 2.0, 2.4),
          (8, "transformer", 2, 128, "dynamic", 0.79, 0.85, 2.8, 3.0, 2.2),
          (9, "transformer", 1, 128, "dynamic", 0.70, None, 2.0, 1.9, 1.6)]  # cheap estimate only
FRONT = [6, 5, 7, 4, 3, 2, 1, 0]


def make_trial(i, family, n_layers, dim, int8, cheap, full, predicted, ms, mb) -> dict:
    shape = {"n_layers": n_layers, "dim": dim, "int8": int8}
    if family == "transformer":
        shape |= {"n_heads": [dim // 32] * n_layers, "ffn_dim": [4 * dim] * (n_layers - 1) + [2 * dim], "vocab_size": 15000}
    return {"id": i, "family": family, "params": {"n_layers": n_layers}, "shape": shape, "state": "complete", "skipped": None,
            "predicted": {"latency_ms": predicted, "onnx_bytes": mb * 0.98e6},
            "cheap": {"val_accuracy": cheap, "latency_ms": ms * 1.02, "onnx_bytes": mb * 1e6, "seconds": 90.0},
            "full": None if full is None else {"val_accuracy": full, "latency_ms": ms, "onnx_bytes": mb * 1e6, "seconds": 600.0}}


def make_search() -> dict:
    """A completed search: ten trials (transformer, GRU, LSTM, bag of embeddings), one skipped, one failed; trial 3 chosen."""
    trials = [make_trial(*t) for t in TRIALS]
    trials.append({"id": 10, "family": "transformer", "shape": {"n_layers": 6, "dim": 384}, "state": "skipped",
                   "skipped": "its cheap estimate is dominated", "predicted": {"latency_ms": 41.0, "onnx_bytes": 6.1e7}})
    trials.append({"id": 11, "family": "gru", "shape": {"dim": 512}, "state": "failed"})
    holdout = [{"shape": {"n_layers": 1 + i % 4, "dim": 64 * (1 + i % 3)}, "precision": ("fp32", "dynamic", "static")[i % 3],
                "predicted_ms": (2 + 1.5 * i) * (1 + 0.05 * (-1) ** i * (i % 4)), "measured_ms": 2 + 1.5 * i} for i in range(20)]
    front_test = [{"trial": i, "test_accuracy": (acc := trials[i]["full"]["val_accuracy"] + 0.004),
                   "test_accuracy_ci": [acc - 0.02, acc + 0.02], "delta_vs_teacher": {"points": 100 * (acc - 0.918), "ci": None}}
                  for i in FRONT if i != 3]
    front_test.append({"trial": 3, "test_accuracy": 0.89, "test_accuracy_ci": [0.87, 0.91],
                       "delta_vs_teacher": {"points": -2.8, "ci": [-4.1, -1.6]}})
    return {
        "schema": "slimformer-search/1", "name": "vader_search",
        "command": "slimformer compress runs/minilm_vader/stages/teacher/model --max-drop 3% --minimize latency --time 2h",
        "ended": "completed", "teacher": TEACHER,
        "budget": {"max_drop": 3.0, "max_drop_relative": True, "min_val_accuracy": 0.8827, "minimize": "latency",
                   "max_latency_ms": None, "max_mb": None, "batch_size": 8, "seq_len": 64, "threads": 2, "time_s": 7200},
        "protocol": {"cpu": "AMD EPYC (2 usable cores)", "cpu_features": {"avx2": True, "avx512": False, "vnni": False},
                     "versions": {"onnxruntime": "1.32.0", "torch": "2.13.0"}, "threads": 2},
        "phases": [{"name": n, "seconds": s} for n, s in (("teacher", 12.0), ("sensitivity", 140.0), ("latency model", 300.0),
                                                          ("cheap estimates", 2400.0), ("full recovery", 3000.0),
                                                          ("final scoring", 200.0))],
        "sensitivity": {"metric": "validation accuracy lost (points) when the unit is removed, no recovery",
                        "baseline_val_accuracy": 0.91, "layers": [0.5, 3.1, 1.2, 0.8, 0.4, 2.2],
                        "heads": {"fractions": [0.25, 0.5, 0.75],
                                  "drops": [[0.1 * (i + 1), 0.3 * (i + 1), 1.0 + i] for i in range(6)]},
                        "ffn": {"fractions": [0.25, 0.5, 0.75], "drops": [[0.2, 0.5 + 0.1 * i, 2.0 + 0.5 * i] for i in range(6)]},
                        "width": {"fractions": [0.75, 0.5, 0.25], "drops": [1.0, 4.0, 20.0]},
                        "int8": {"groups": ["attn_in", "attn_out", "ffn_up", "ffn_down", "embeddings"],
                                 "drops": [0.1, 0.0, 0.2, 0.5, 0.0]}},
        "latency_model": {"n_fit": 16, "key": "AMD EPYC, 2 threads, onnxruntime 1.32.0", "features": ["flops", "bytes"],
                          "holdout": holdout, "median_abs_error": {"fp32": 0.08, "int8": 0.11}},
        "trials": trials, "front": FRONT, "front_test": front_test,
        "chosen": {"trial": 3, "meets_budget": True, "missed": [], "val_accuracy": 0.89, "test_accuracy": 0.89,
                   "test_accuracy_ci": [0.87, 0.91], "delta_vs_teacher": {"points": -2.8, "ci": [-4.1, -1.6]},
                   "latency_ms": 6.2, "speedup": 12.05, "onnx_bytes": 4_510_000, "size_ratio": 20.06,
                   "onnx_dir": "chosen/onnx", "best_yaml": "best.yaml",
                   "steps": ["distill 3 layers [1, 3, 5]", "prune_width 192", "quantize dynamic"]},
        "spearman": {"rho": 0.8, "n": 9, "p_value": 0.01},
        "budgets_met": {"accuracy": True, "latency": None, "size": None},
        "test_reads": "the test split was scored only for the 8 candidates of the final front and the teacher, "
                      "after the search chose on validation",
    }


def make_missed() -> dict:
    """Stopped by its time limit under a budget nothing met: the nearest candidate, missing accuracy and latency."""
    search = make_search()
    search["ended"] = "time limit"
    search["budget"] |= {"max_drop": 1.0, "max_drop_relative": False, "min_val_accuracy": 0.90, "max_latency_ms": 5.0}
    search["chosen"] |= {"meets_budget": False, "missed": [
        {"budget": "max_drop", "limit": 0.90, "value": 0.89, "by": "1.0 points"},
        {"budget": "max_latency_ms", "limit": 5.0, "value": 6.2, "by": "1.2 ms"}]}
    search["budgets_met"] = {"accuracy": False, "latency": False, "size": None}
    search["sensitivity"] = search["latency_model"] = search["phases"] = None  # drawn in the completed page
    return search


def make_no_full() -> dict:
    """Interrupted before any full recovery: cheap estimates only, nothing chosen, most optional parts null."""
    search = make_search()
    search |= {"ended": "interrupted", "front": [], "front_test": [], "chosen": None, "spearman": {"rho": None, "n": 0},
               "budgets_met": {"accuracy": None, "latency": None, "size": None}, "sensitivity": None, "teacher": None,
               "test_reads": "the test split has not been read: the search stopped before the final scoring",
               "latency_model": None, "phases": None, "protocol": None}
    for t in search["trials"]:
        t["full"] = None
    search["trials"][9]["state"] = "running"
    return search


def write(folder: Path, search: dict | str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "search.json").write_text(search if isinstance(search, str) else json.dumps(search))
    return folder


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, tuple[str, str, Path]]:
    """Each hand-made search rendered once: name -> (Markdown, HTML, run folder)."""
    out = {}
    for name, make in (("complete", make_search), ("missed", make_missed), ("no_full", make_no_full)):
        folder = write(tmp_path_factory.mktemp(name), make())
        md, html = write_search_report(folder)
        assert (md, html) == (folder / "report.md", folder / "report.html")
        out[name] = (md.read_text(encoding="utf-8"), html.read_text(encoding="utf-8"), folder)
    return out


def embedded_pngs(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]


def test_completed_search_page(pages):
    md, html, folder = pages["complete"]
    assert "did not complete" not in md and 'class="alert"' not in html
    assert "Command: `slimformer compress runs/minilm_vader/stages/teacher/model --max-drop 3% --minimize latency --time 2h` " \
           "(running it again resumes the search without repeating finished trials)" in md
    assert "validation accuracy ≥ 88.27% (at most 3% of the teacher's 91.00% lost)" in md
    assert "| accuracy | val ≥ 88.27% | 89.00% | yes |" in md
    assert "| chosen: trial #3 | 89.00 | 89.00 [87.00, 91.00] | -2.80 [-4.10, -1.60] | 6.20 | 12.05× | 4.51 | 20.06× |" in md
    assert "| teacher | 91.00 | 91.80 [90.00, 93.50] | — | 74.70 | 1.00× | 90.49 | 1.00× |" in md
    assert "1. distill 3 layers [1, 3, 5]" in md and "`slimformer run best.yaml` rebuilds it from the teacher" in md
    assert "Spearman ρ = 0.80 over 9 candidates trained at both fidelities, p = 0.01" in md
    assert "Latency model, median error on the shapes held back from its fit: fp32 8.0% (7 shapes), int8 11.0% (13 shapes); " \
           "on the 10 trained candidates: 6.7%." in md
    assert "on 20 held-back shapes (not used in the fit, timed in a process of their own): fp32 8.0% (7 shapes); int8" in md
    assert "On the 10 trained candidates" in md
    assert "Test split: the test split was scored only for the 8 candidates of the final front and the teacher, after " \
           "the search chose on validation." in md
    front = md.split("## Front (full fidelity)")[1].split("## ")[0]
    assert len(re.findall(r"^\| (\*\*)?#", front, re.MULTILINE)) == 8
    assert "| **#3 (chosen)** | transformer | 3 layers, dim 192, 6 heads, ffn 768/768/384" in front
    assert "| 89.00 | 89.00 [87.00, 91.00] | -2.80 [-4.10, -1.60] | 6.20 | 4.51 |" in front
    trials = md.split("## All trials (12)")[1].split("## ")[0]
    assert trials.count("\n| ") == 12 + 1  # header and one row per trial
    assert ("| #10 | transformer | 6 layers, dim 384 | skipped | — | — | 41.00 | — | 61.00 (pred.) | "
            "its cheap estimate is dominated |") in trials
    assert "| #9 | transformer | 1 layer, dim 128, 4 heads, ffn 256, vocab 15000, int8 dynamic | complete | 70.00 | — |" in trials
    assert "| total | 1 h 41 min | 84% of the 2 h 0 min budget |" in md
    # five figures: accuracy vs latency and size, sensitivity, latency model, phases; linked from md, embedded in html
    names = ["search_accuracy_vs_latency.png", "search_accuracy_vs_size.png", "search_sensitivity.png",
             "search_latency_model.png", "search_phases.png"]
    assert all(f"](report_files/{n})" in md and (folder / "report_files" / n).is_file() for n in names)
    pngs = embedded_pngs(html)
    assert len(pngs) == 5 and all(p.startswith(b"\x89PNG") for p in pngs)
    assert "<script" not in html and "base64" not in md
    assert "<code>slimformer run best.yaml</code>" in html and "89.00 [87.00, 91.00]" in html


def test_time_limit_and_missed_budget_are_prominent(pages):
    md, html, _ = pages["missed"]
    assert md.split("\n")[4].startswith("> **⚠️ This search did not complete (ended: time limit): it stopped at its time limit")
    assert 'class="alert">⚠️ This search did not complete (ended: time limit)' in html
    assert "validation accuracy ≥ 90.00% (at most 1 point below the teacher's 91.00%); latency ≤ 5 ms; minimize latency" in md
    assert "| accuracy | val ≥ 90.00% | 89.00% | no: misses by 1.0 points |" in md
    assert "| latency | ≤ 5.00 ms | 6.20 ms | no: misses by 1.2 ms |" in md
    assert "| size |" not in md  # no size cap: no row
    assert ("misses the budget (no candidate met it; this is the nearest): validation accuracy (max_drop): 89.00% "
            "against a limit of 90.00%, short by 1.0 points; latency (max_latency_ms): 6.20 ms against a limit of 5.00 ms, "
            "short by 1.2 ms.") in md
    assert html.count('class="alert"') == 2
    assert len(embedded_pngs(html)) == 3  # accuracy vs latency (the cap drawn) and size; trained candidates' latency


def test_no_full_fidelity_trial_yet(pages):
    md, html, _ = pages["no_full"]
    assert "ended: interrupted): it was interrupted" in md and "run the same command again to resume" in md
    assert "No trial has finished its full recovery yet, so there is no front and nothing is chosen" in md
    assert "No front yet" in md and "chosen: trial" not in md
    assert "Rank correlation between cheap and full validation accuracy: not available (0 candidates" in md
    assert "the test split has not been read" in md
    sensitivity = md.split("## Sensitivity")[1].split("## ")[0]
    assert "Not measured." in sensitivity and "png" not in sensitivity
    assert "| #9 | transformer | 1 layer, dim 128, 4 heads, ffn 256, vocab 15000, int8 dynamic | running | 70.00 | — |" in md
    assert "Latencies are predicted before training from ? shapes" in md and "On the 10 trained candidates" in md
    assert "## Time per phase\n\nNot recorded." in md
    assert len(embedded_pngs(html)) == 3  # cheap estimates still drawn against latency and size; predicted vs measured


def broken_files() -> list[tuple[str, object, str]]:
    """(case, file contents, what the error must say)."""
    wrong_type, dangling, bad_state, missing_trials = make_search(), make_search(), make_search(), make_search()
    wrong_type["trials"][2]["full"]["val_accuracy"] = "high"
    dangling["front"] = [3, 42]
    bad_state["trials"][0]["state"] = "done"
    del missing_trials["trials"]
    old = make_search() | {"schema": "slimformer-search/0"}
    text = json.dumps(make_search())
    return [("truncated", text[: len(text) // 2], "is not valid JSON"), ("not an object", "[1, 2]", "expected object, got"),
            ("wrong type", wrong_type, r"trials\[2\]\.full\.val_accuracy: expected number or null, got \"high\""),
            ("dangling id", dangling, r"trial ids \[42\] that are not in trials"),
            ("bad state", bad_state, r"trials\[0\]\.state: expected one of"),
            ("no trials", missing_trials, r"search.json: missing trials"), ("old schema", old, "this slimformer reads")]


@pytest.mark.parametrize(("case", "contents", "message"), broken_files(), ids=[c[0] for c in broken_files()])
def test_broken_search_json_is_a_clean_error(tmp_path: Path, case: str, contents, message: str):
    folder = write(tmp_path / "run", contents)
    with pytest.raises(ReportError, match=message) as error:
        write_search_report(folder)
    assert str(folder / "search.json") in str(error.value) and "resumes the search" in str(error.value)
    assert not (folder / "report.md").exists()


def test_missing_search_json_and_cli(tmp_path: Path, capsys):
    with pytest.raises(ReportError, match=f"{tmp_path / 'search.json'} not found.*slimformer compress"):
        load_search(tmp_path)
    assert main([str(tmp_path)]) == 2 and "error:" in capsys.readouterr().err
    assert main([]) == 2


def test_schema_agrees_with_jsonschema():
    """The schema is valid JSON Schema; jsonschema accepts the good files and rejects the broken ones the report
    rejects (all but the dangling id, a cross-reference); the report's validator knows every keyword it uses."""
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for make in (make_search, make_missed, make_no_full):
        validator.validate(make())
    for case, contents, _ in broken_files():
        if case not in ("truncated", "dangling id"):
            assert not validator.is_valid(contents), case
    known = {"$schema", "$id", "$defs", "$ref", "title", "description", "type", "required", "properties", "items",
             "enum", "const", "minimum", "maximum", "minItems", "maxItems"}

    def keywords(node: dict) -> set[str]:
        found = set(node)
        for key, sub in node.items():
            children = sub.values() if key in ("properties", "$defs") else [sub] if key == "items" else []
            found |= {k for child in children for k in keywords(child)}
        return found

    assert keywords(schema) <= known, keywords(schema) - known

