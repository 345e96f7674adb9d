"""End to end: every shipped recipe smoke-runs with shrinking overrides; reruns resume from cache."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

import cli
from compress.run.config import RECIPES_DIR, load_recipe
from tests.helpers import tiny_bert_folder, write_task

ROOT = Path(__file__).resolve().parents[2]
# smoke-run by tests/run/test_embedding_recipe.py and tests/models/test_pair_import.py, on stand-ins of their own kind;
# quantize by tests/steps/test_quantize.py::test_pipeline_int8_stage, with this shrink and check_shipped_run (one run, not two)
SHIPPED = sorted(p for p in RECIPES_DIR.glob("*.yaml") if p.stem not in ("minilm_embed", "minilm_pairs", "quantize"))

SHRINK_MODEL = ["teacher.size=tiny", "teacher.dim=32", "teacher.n_heads=2", "teacher.ffn_dim=64", "teacher.n_layers=2"]
SHRINK_BENCH = ["bench.batch_sizes=[1,2]", "bench.repeats=3", "bench.warmup=1", "bench.memory=false", "bench.traffic_texts=16",
                # the end-of-run re-timing is generic, tested in tests/eval/test_eval_interleave.py and by the quickstart test
                "bench.interleave=false",
                # the worker's own torch threads (tests/conftest.py): 2 would rebuild torch's thread pool in every bench step
                # and spin ONNX Runtime's (1-3 s a step on a busy 2-core machine)
                "bench.threads=1"]
SHRINK_TASK = {
    "wordnet": ["task.max_examples=400", "task.seq_len=24", "task.tokenizer.vocab_size=300"],
    "listops": ["task.n_train=200", "task.n_validation=30", "task.n_test=30", "task.min_length=5", "task.max_length=30",
                "task.seq_len=40"],
    "lookup": ["task.n_train=200", "task.n_validation=30", "task.n_test=30", "task.min_pairs=4", "task.max_pairs=8",
               "task.seq_len=24"],
    "files": [],
}


def imported_stand_ins(folder: Path) -> dict[str, Path]:
    """What a recipe with `teacher.from` and its own files needs, tiny: a random BERT checkpoint,
    labelled CSVs in its vocabulary and an unlabelled text file."""
    ckpt = tiny_bert_folder(folder / "ckpt", n_labels=None)
    write_task(folder)
    (folder / "unlabeled.txt").write_text("the day was very fine\nthe movie was not poor\n")
    return {"from": ckpt, "train": folder / "train.csv", "unlabeled": folder / "unlabeled.txt"}


def shrink(path: Path, tmp_path: Path) -> list[str]:
    recipe, _ = load_recipe(path)
    lists = {"steps": recipe.steps, **{f"variants.{v}": vs for v, vs in (recipe.variants or {}).items()}}
    steps = [f"{key}.{i}.max_steps=3" for key, items in lists.items() for i, s in enumerate(items) if hasattr(s, "max_steps")]
    steps += [f"{key}.{i}.recover.max_steps=3" for key, items in lists.items() for i, s in enumerate(items)
              if hasattr(s, "recover")]
    steps += [f"{key}.{i}.max_texts=200" for key, items in lists.items() for i, s in enumerate(items)
              if getattr(s, "builtin", None)]
    # one fit; the C search: tests/eval/test_eval_baseline.py
    steps += [f"{key}.{i}.C=[1.0]" for key, items in lists.items() for i, s in enumerate(items) if s.kind == "baseline"]
    # as deep as the shrunk teacher: every layer adds ~1 s to each of the stage's exports
    steps += [f"{key}.{i}.student.n_layers=2" for key, items in lists.items() for i, s in enumerate(items)
              if (getattr(getattr(s, "student", None), "n_layers", None) or 0) > 2]
    steps += [f"{key}.{i}{part}.curriculum=[{{min_length: 12, max_length: 20, n_train: 40}}]"  # one short phase
              for key, items in lists.items() for i, s in enumerate(items)
              for part, owner in (("", s), (".recover", getattr(s, "recover", None))) if getattr(owner, "curriculum", None)]
    task = SHRINK_TASK[recipe.task.kind]
    if recipe.task.kind == "lookup" and recipe.task.min_length is not None:  # the long form: a short haystack
        task = [*task, "task.min_length=30", "task.max_length=40", "task.seq_len=42"]
    model = SHRINK_MODEL
    if recipe.teacher.from_ is not None or recipe.task.kind == "files":  # real files the test machine lacks: tiny stand-ins
        files = imported_stand_ins(tmp_path / "stand_ins")
        model = [f"teacher.from={files['from']}"] if recipe.teacher.from_ is not None else SHRINK_MODEL
        task = [f"task.{split}={files['train']}" for split in ("train", "validation", "test")]
        # the tiny checkpoint has 40 positions
        task.append("task.seq_len=16" if recipe.teacher.from_ is not None else "task.seq_len=48")
        for key, items in lists.items():
            for i, s in enumerate(items):
                for prefix, part in ((f"{key}.{i}", s), (f"{key}.{i}.recover", getattr(s, "recover", None))):
                    steps += [f"{prefix}.{field}=[{files['unlabeled']}]" for field in ("unlabeled", "extra_texts", "corpus")
                              if getattr(part, field, None)]
                if getattr(s, "dim", None) and s.kind == "prune_width":
                    steps.append(f"{key}.{i}.dim=16")
    return task + model + SHRINK_BENCH + steps + ["bench.seq_lens=null"]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_recipe_smoke_runs(path, tmp_path, capsys):
    assert cli.main(["run", str(path), *shrink(path, tmp_path), "--runs-dir", str(tmp_path)]) == 0
    check_shipped_run(tmp_path / path.stem, capsys.readouterr().out)


def check_shipped_run(run_dir: Path, out: str) -> None:
    """What a shipped recipe's smoke run leaves in `run_dir` and prints (`out`): results.json valid against its
    schema with a measured teacher, the run's files and report, and a resolved recipe that re-validates as is."""
    results = json.loads((run_dir / "results.json").read_text())
    schema = json.loads((ROOT / "eval" / "results_schema.json").read_text())
    jsonschema.validate(results, schema)
    stages = {s["name"]: s for s in results["stages"]}
    teacher = stages["teacher"]
    assert 0.0 <= teacher["accuracy"] <= 1.0
    assert teacher["params"] > 0 and teacher["onnx_bytes"] > 0
    assert (run_dir / teacher["onnx_dir"] / "model.onnx").is_file()
    assert {r["runtime"] for r in teacher["latency"]} >= {"onnxruntime", "torch"}
    assert {(r["batch"], r["device"]) for r in teacher["latency"]} >= {(1, "cpu"), (2, "cpu")}
    for name in ("report.md", "report.html", "recipe.yaml", "env.json", "metrics.jsonl"):
        assert (run_dir / name).is_file(), name
    assert str(run_dir / "report.html") in out
    # the resolved recipe re-validates as is
    load_recipe(run_dir / "recipe.yaml")


def test_quickstart_end_to_end_and_resume(tmp_path):
    """The quickstart, shrunk: ONNX accuracy equals torch accuracy; a rerun retrains nothing."""
    args = ["run", "quickstart", *SHRINK_TASK["wordnet"], *SHRINK_MODEL, "bench.batch_sizes=[1,2]", "bench.repeats=3",
            "bench.warmup=1", "bench.threads=1", "steps.teacher.epochs=2", "--runs-dir", str(tmp_path)]
    assert cli.main(args) == 0
    run_dir = tmp_path / "quickstart"
    first = json.loads((run_dir / "results.json").read_text())
    teacher = first["stages"][0]
    assert teacher["accuracy"] == pytest.approx(teacher["accuracy_torch"], abs=1e-9)
    assert teacher["parity"]["max_abs_diff"] <= teacher["parity"]["atol"]
    assert teacher["peak_memory"][0]["peak_rss_bytes"] > 0
    assert first["protocol"]["task"] == "wordnet" and first["baseline"] == "teacher"
    # real test texts served (eval/traffic.py), and written down for `slimformer bench RUN`
    n_texts = first["protocol"]["traffic"]["n_texts"]
    assert [(r["mode"], r["padding"], r["n_texts"]) for r in teacher["traffic"]] == [
        ("single", "longest", n_texts), ("single", "max_length", n_texts), ("sorted", "longest", n_texts)]
    assert len((run_dir / "traffic_texts.jsonl").read_text().splitlines()) == n_texts
    low, high = teacher["accuracy_ci"]
    assert low < teacher["accuracy"] < high or teacher["accuracy"] in (0.0, 1.0)
    weights = run_dir / "stages/teacher/model/model.safetensors"
    mtime = weights.stat().st_mtime_ns

    assert cli.main(args) == 0
    second = json.loads((run_dir / "results.json").read_text())
    assert weights.stat().st_mtime_ns == mtime, "the cached teacher was retrained"
    assert second["stages"][0]["accuracy"] == teacher["accuracy"]
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert sum(e.get("event") == "step_done" and e.get("kind") == "train" for e in events) == 1
    assert not [p for p in run_dir.rglob(".*") if p.name.endswith(".tmp")], "no temporary files left behind"

    # a changed later step reruns from there, and the teacher is still reused
    assert cli.main([*args, "steps.export.atol=0.001"]) == 0
    assert weights.stat().st_mtime_ns == mtime


def test_cli_errors_exit_2_and_write_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ntask: {kind: files, train: missing.csv}\nsteps:\n  - kind: train\n")
    runs = tmp_path / "runs"
    # a process, once: the exit status the shell sees is 2
    done = subprocess.run([sys.executable, str(ROOT / "cli.py"), "run", str(bad), "--runs-dir", str(runs)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "missing.csv" in done.stderr and "Traceback" not in done.stderr
    assert not runs.exists(), "a run with bad data must write nothing"
    assert cli.main(["validate", str(bad), "task.seq_len=abc"]) == 2  # in this process: a subprocess adds only its imports (~8 s)
    err = capsys.readouterr().err
    assert "task.seq_len" in err and "Traceback" not in err


def test_cli_help_and_ls():
    done = subprocess.run([sys.executable, str(ROOT / "cli.py"), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "validate" in done.stdout
    assert cli.main(["ls"]) == 0


def test_validate_checks_data_files_and_columns(tmp_path, capsys):
    rows = "\n".join(f"example text {i},{'pos' if i % 2 else 'neg'}" for i in range(40))
    (tmp_path / "train.csv").write_text("sentence,label\n" + rows + "\n")
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("name: mine\ntask: {kind: files, train: train.csv}\nsteps:\n  - kind: train\n")
    assert cli.main(["validate", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "train.csv" in err and "'text'" in err and "sentence" in err
    assert cli.main(["validate", str(recipe), "task.text_column=sentence"]) == 0
    assert "2 classes" in capsys.readouterr().out


def test_variants_share_the_trunk_and_cache_independently(tmp_path):
    """Two variants continue from one teacher; changing one variant reruns only that variant."""
    recipe = tmp_path / "branches.yaml"
    recipe.write_text(
        "name: branches\n"
        "task: {kind: lookup, n_train: 200, n_validation: 30, n_test: 30, min_pairs: 4, max_pairs: 8, seq_len: 24}\n"
        "teacher: {dim: 32, n_heads: 2, ffn_dim: 64, n_layers: 2}\n"
        "steps: [{kind: train, max_steps: 3}, {kind: export}, {kind: evaluate}]\n"
        "variants:\n"
        "  q: [{kind: quantize}, {kind: evaluate}]\n"
        "  p: [{kind: prune_heads, name: heads, amount: 0.5, recover: {max_steps: 2}}, {kind: export}, {kind: evaluate}]\n"
        "bench: {batch_sizes: [1], repeats: 3, warmup: 1, memory: false, threads: 1}\n"
    )
    args = ["run", str(recipe), "--runs-dir", str(tmp_path / "runs")]
    assert cli.main(args) == 0
    run_dir = tmp_path / "runs" / "branches"
    stages = {s["name"]: s for s in json.loads((run_dir / "results.json").read_text())["stages"]}
    assert list(stages) == ["teacher", "q.int8", "p.heads"]
    assert stages["q.int8"]["variant"] == "q" and "variant" not in stages["teacher"]
    assert stages["q.int8"]["parent"] == "teacher"
    heads = json.loads((run_dir / "stages" / "p.heads" / "model" / "config.json").read_text())["n_heads"]
    assert sum(heads) == 2, "the variant pruned half of the trunk teacher's 4 heads"
    assert (run_dir / "stages" / "p.heads" / "onnx" / "model.onnx").is_file()

    def done() -> list[str]:
        events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return [f"{e['stage']}:{e['kind']}" for e in events if e.get("event") == "step_done"]

    first = done()
    assert first.count("teacher:train") == 1
    assert cli.main([*args, "variants.p.heads.amount=0.25"]) == 0
    rerun = done()[len(first):]
    assert rerun == ["p.heads:prune_heads", "p.heads:export", "p.heads:evaluate"], "only the changed variant reruns"


STALE = (
    "name: stale\n"
    "task: {kind: lookup, n_train: 200, n_validation: 30, n_test: 30, min_pairs: 4, max_pairs: 8, seq_len: 24}\n"
    "teacher: {dim: 32, n_heads: 2, ffn_dim: 64, n_layers: 2}\n"
    "steps:\n"
    "  - {kind: train, max_steps: 3}\n  - {kind: export}\n  - {kind: evaluate}\n  - {kind: bench}\n"
    "  - {kind: distill, student: {n_layers: 1}, max_steps: 3}\n  - {kind: export}\n  - {kind: evaluate}\n"
    "bench: {batch_sizes: [1], repeats: 3, warmup: 1, memory: false, interleave: false, threads: 1}\n"
)


def finished_steps(run_dir: Path) -> list[str]:
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [f"{e['stage']}:{e['kind']}" for e in events if e.get("event") == "step_done"]


def test_code_version_covers_the_modules_a_step_names(tmp_path, monkeypatch):
    from compress.run.runner import code_version

    module = tmp_path / "measuring_code.py"
    module.write_text("def measure():\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = code_version(("measuring_code",))
    assert code_version(("measuring_code",)) == before and code_version() != before
    module.write_text("def measure():\n    return 2\n")
    assert code_version(("measuring_code",)) != before


@pytest.fixture(scope="module")
def stale_run(tmp_path_factory) -> tuple[Path, Path]:
    """STALE run once (the recipe and its runs folder); each test reruns a copy of it."""
    folder = tmp_path_factory.mktemp("stale")
    recipe = folder / "stale.yaml"
    recipe.write_text(STALE)
    assert cli.main(["run", str(recipe), "--runs-dir", str(folder / "runs")]) == 0
    return recipe, folder / "runs"


def copy_of(stale_run: tuple[Path, Path], tmp_path: Path) -> tuple[list[str], Path]:
    """The `run` arguments for a fresh copy of the finished STALE run in `tmp_path`, and its run folder."""
    recipe, runs = stale_run
    shutil.copytree(runs, tmp_path / "runs")
    return ["run", str(recipe), "--runs-dir", str(tmp_path / "runs")], tmp_path / "runs" / "stale"


def test_editing_eval_code_reruns_only_the_measuring_steps_that_use_it(stale_run, tmp_path, monkeypatch):
    args, run_dir = copy_of(stale_run, tmp_path)
    first = finished_steps(run_dir)
    import compress.run.runner

    real = compress.run.runner.code_version
    # eval/accuracy.py "edited": its source hash changes, nothing else does
    monkeypatch.setattr(compress.run.runner, "code_version",
                        lambda modules=(): real(modules) + ("-edited" if "eval.accuracy" in modules else ""))
    assert cli.main(args) == 0
    assert finished_steps(run_dir)[len(first):] == ["teacher:evaluate", "student:evaluate"], (
        "only evaluate reads eval/accuracy.py")


def test_a_new_baseline_reruns_evaluate_and_refreshes_agreement(stale_run, tmp_path):
    args, run_dir = copy_of(stale_run, tmp_path)
    first = finished_steps(run_dir)
    before = {s["name"]: s for s in json.loads((run_dir / "results.json").read_text())["stages"]}
    assert before["teacher"]["agreement"] == 1.0
    assert cli.main([*args, "report.baseline=student"]) == 0
    rerun = finished_steps(run_dir)[len(first):]
    assert "teacher:train" not in rerun and "student:distill" not in rerun, "a new baseline retrains nothing"
    assert "teacher:evaluate" in rerun
    after = {s["name"]: s for s in json.loads((run_dir / "results.json").read_text())["stages"]}
    assert after["student"]["agreement"] == 1.0 and after["teacher"]["agreement"] == before["student"]["agreement"]
