"""The runner: runs a recipe's steps in order, caching each one, and writes the run's files.

Each step is fingerprinted by a hash of everything that determines it: the code version, the
data, the seed, the teacher's shape, every step before it and its own config. A finished step
leaves a marker `runs/<name>/steps/NN-<name>.json` holding its fingerprint and what it
recorded; running the recipe again skips every step whose marker matches and resumes at the
first one that does not (a killed run resumes from the last finished step).

A recipe with `variants:` runs its `steps:` (the trunk) once, then each variant's steps from
the trunk's last stage on a copy of its model (`lineages` names their stages). The last
measurement re-times every stage in interleaved rounds (`eval/interleave.py`), and the results
go to results.json (`eval/results.py`). What steps share while running is the run context
(`compress/run/context.py`: one `Stage` record per stage).

A *reference* step (`reference=True`: the classical `baseline`) makes a row of its own, under its
own stage name, for comparison only: it never becomes the current stage, a parent, the teacher
or the default baseline, it has no torch model and no ONNX artifact, and, like a measuring step,
its fingerprint feeds no later step, so adding, editing or re-running it retrains nothing. This
module imports no step and not the recipe schema (`compress/run/config.py` imports it), so there
is no import circle.
"""

import copy
import json
import time
from pathlib import Path
from typing import Any

import torch

from compress.data.task import data_changes, data_notes
from compress.distributed import is_main_process, main_process_first
from compress.io import atomic_dir, atomic_write_json, atomic_write_text
from compress.models.imported import ImportedTeacher, import_teacher
from compress.run.context import RunContext
from compress.run.preflight import check_step_files, preflight, resolve_device  # noqa: F401  (the CLI imports two of them here)
from compress.run.registry import STEPS, StepSpec, code_version, fingerprint, lineages
from compress.run.resolved import dump_recipe


def save_tokenizer(tokenizer, folder: Path) -> None:
    with atomic_dir(folder) as tmp:
        tokenizer.save_pretrained(tmp)


def prepare_tokenizer(recipe, data, run_dir: Path, imported: ImportedTeacher | None = None):
    """The run's tokenizer: the imported teacher's own, or one trained on the training split
    (reused from the run folder if the data is unchanged)."""
    from transformers import AutoTokenizer

    from compress.data import train_tokenizer
    from compress.data.tokenizer import fit_to_length_

    folder, seq_len = run_dir / "tokenizer", recipe.task.seq_len
    if imported is not None:
        key = fingerprint("imported", imported.digest, seq_len)
    else:
        key = fingerprint(data.fingerprint, recipe.task.tokenizer.model_dump(), recipe.task.seq_len, code_version())
    stamp = folder / "fingerprint.txt"
    if stamp.is_file() and stamp.read_text() == key:
        return fit_to_length_(AutoTokenizer.from_pretrained(folder), seq_len)
    if imported is not None:
        tokenizer = imported.tokenizer
    else:
        tokenizer = train_tokenizer(data.texts["train"], recipe.task.tokenizer, recipe.task.seq_len)
    fit_to_length_(tokenizer, seq_len)  # every stage saves it: truncating at seq_len, padding to the batch's longest
    with atomic_dir(folder) as tmp:
        tokenizer.save_pretrained(tmp)
        (tmp / "fingerprint.txt").write_text(key)
    return tokenizer


def outputs_exist(ctx: RunContext, spec: StepSpec, done: dict) -> bool:
    """A finished step's folders are still there (a kill between two renames can lose one), and its saved model's
    weights whole (a safetensors header that is damaged, or a file cut short: the step runs again)."""
    from compress.errors import CheckpointError
    from compress.models.import_hf import read_header

    folders = [ctx.model_dir()] if spec.makes_stage and spec.saves_model else []
    recorded = done.get("recorded", {})
    folders += [ctx.run_dir / recorded[key] for key in ("onnx_dir", "onnx_fp16_dir", "artifact_dir") if recorded.get(key)]
    if not all(f.is_dir() for f in folders):
        return False
    weights = sorted(ctx.model_dir().glob("*.safetensors")) if spec.makes_stage and spec.saves_model else []
    try:
        for path in weights:
            read_header(path)
    except (OSError, CheckpointError):
        return False
    return not (spec.makes_stage and spec.saves_model) or bool(weights)


def remove_stale_temporaries(run_dir: Path) -> None:
    """Delete what a killed run left half-written: hidden `.*.tmp` files and folders (see compress/io.py)."""
    import shutil

    for path in sorted(run_dir.rglob(".*.tmp"), reverse=True):
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def open_run(recipe, recipe_path: Path | None, runs_dir: Path) -> tuple[RunContext, dict, str]:
    """Check everything that can fail on bad input, then open `runs_dir/<name>/`: the resolved recipe, the
    tokenizer, the encoded splits, env.json. Returns (the context, the environment, the run's root fingerprint)."""
    from transformers.utils import logging as hf_logging

    from compress.data import encode_task
    from eval.env import collect_env

    # transformers' own bars ("Loading weights", "Writing model shards") would interleave with ours
    hf_logging.disable_progress_bar()
    # everything that can fail on bad input runs before the first file is written: the checks `slimformer validate` runs
    base_dir = recipe_path.parent if recipe_path else Path.cwd()
    checked = preflight(recipe, base_dir)
    device, data = checked.device, checked.data
    imported = import_teacher(recipe, data, base_dir, checked.checkpoint) if checked.checkpoint is not None else None

    run_dir = (Path(runs_dir) / recipe.name).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    if is_main_process():  # several processes (accelerate launch): only the main one writes (compress/distributed.py)
        remove_stale_temporaries(run_dir)
    atomic_write_text(run_dir / "recipe.yaml",
                      f"# resolved recipe; re-run with: slimformer run {run_dir / 'recipe.yaml'}\n"
                      + dump_recipe(recipe, base_dir))
    torch.manual_seed(recipe.seed)
    with main_process_first():  # the others load the tokenizer the main process trained and saved
        tokenizer = prepare_tokenizer(recipe, data, run_dir, imported)
    encoded = encode_task(data, tokenizer, recipe.task.seq_len)
    ctx = RunContext(recipe, run_dir, data, tokenizer, encoded, device, imported=imported, base_dir=base_dir)
    env = collect_env(recipe.bench.threads)
    atomic_write_json(run_dir / "env.json", env)
    key = fingerprint(code_version(), data.fingerprint, recipe.seed, recipe.teacher.model_dump(), recipe.task.model_dump(),
                      imported.digest if imported else None)
    ctx.steps, ctx.root_key = list(recipe.steps), key
    if data_changes(data.stats):  # rows dropped, texts cut when the files were read: in the log (and results.json)
        ctx.log(event="data", **data_changes(data.stats))
    return ctx, env, key


def run_trunk(ctx: RunContext, key: str, say=print) -> tuple[str, Any]:
    """Run (or reuse) the recipe's `steps:`; returns (the last fingerprint, the current model)."""
    model = None
    for index, step in enumerate(ctx.recipe.steps):  # the trunk: the teacher and whatever every variant shares
        key, model = run_step(ctx, index, step, key, model, say)
    return key, model


def run_recipe(recipe, recipe_path: Path | None, runs_dir: Path, command: str = "", console=None) -> Path:
    """Run every step of `recipe` in `runs_dir/<name>/`, resuming finished steps. Returns the run folder."""
    say = console.print if console is not None else print
    ctx, env, key = open_run(recipe, recipe_path, runs_dir)
    run_dir = ctx.run_dir
    for line in data_notes(ctx.data.stats):
        say(f"data: {line}")
    key, model = run_trunk(ctx, key, say)
    trunk_stage, trunk_teacher = ctx.stage, ctx.teacher
    for variant, steps in lineages(recipe) if recipe.variants else []:
        # each variant continues from the trunk's end (its fingerprint chain too, so editing one
        # variant leaves the others cached), on its own copy of the trunk's model; a variant with
        # a train step of its own gets its own teacher, the others keep the trunk's
        ctx.steps, ctx.variant, ctx.stage, ctx.teacher = steps, variant, trunk_stage, trunk_teacher
        variant_key, variant_model = key, copy.deepcopy(model)
        for index in range(len(recipe.steps), len(steps)):
            variant_key, variant_model = run_step(ctx, index, steps[index], variant_key, variant_model, say)
    interleaved = recipe.bench.interleave and is_main_process() and retime_interleaved(ctx, say)
    write_results(ctx, command, env, interleaved)
    return run_dir


def run_step(ctx: RunContext, index: int, step, previous: str, model, say) -> tuple[str, Any]:
    """Run (or reuse, when its marker's fingerprint matches) one step. Returns (its fingerprint, the model)."""
    spec = STEPS[step.kind]
    if not spec.reference:
        return run_chained_step(ctx, index, step, previous, model, say)
    current = ctx.stage  # a reference step records under its own name; the current stage stays what it was
    ctx.add_stage(step.name, step.kind, parent=None)
    try:
        ctx.stage = step.name
        run_chained_step(ctx, index, step, previous, model, say)
    finally:
        ctx.stage = current
    return previous, model  # its fingerprint feeds no later step, and the model goes on unchanged


def run_chained_step(ctx: RunContext, index: int, step, previous: str, model, say) -> tuple[str, Any]:
    """`run_step` for every step; a reference step comes here with `ctx.stage` set to its own name."""
    recipe, run_dir = ctx.recipe, ctx.run_dir
    spec = STEPS[step.kind]
    ctx.index = index
    used = {section: getattr(recipe, section).model_dump() for section in spec.uses}
    inputs = spec.inputs(step, ctx) if spec.inputs else None
    # a pretrain step reads text, not the stage before it: editing the trunk (a scratch teacher's epochs) keeps it cached
    key = fingerprint(ctx.root_key if spec.pretrains else previous, step.model_dump(), used,
                      code_version(spec.code) if spec.code else None, inputs)
    chain = previous if spec.measures else key  # what the next step's fingerprint builds on
    marker = run_dir / "steps" / f"{index:02d}-{step.kind}-{step.name}.json"
    source = ctx.stage  # the stage whose model this step gets: a new stage's default parent
    if spec.makes_stage:
        explicit = getattr(step, "parent", None)  # prune's and quantize's `parent:`; the tokenizer comes from there
        ctx.add_stage(step.name, step.kind, parent=ctx.parent(explicit) if explicit else source)
        ctx.stage = step.name
    label = f"{index} {ctx.variant}" if ctx.variant and index >= len(recipe.steps) else f"{index}"
    done = read_marker(marker, say)
    if done and done.get("fingerprint") == key and outputs_exist(ctx, spec, done):
        say(f"[{label}] {step.kind} {ctx.stage}: cached")
        ctx.current.recorded.update(done["recorded"])
        if spec.sets_tokenizer:
            from transformers import AutoTokenizer

            ctx.set_tokenizer(AutoTokenizer.from_pretrained(ctx.model_dir()))
        if spec.makes_stage and spec.saves_model:
            model = ctx.load_model(ctx.stage)
            if ctx.stage == ctx.teacher_stage:
                ctx.teacher = ctx.load_model(ctx.stage)
        return chain, model
    say(f"[{label}] {step.kind} {ctx.stage or ''}".rstrip())
    ctx.pending = {}
    started = time.time()
    model = spec.fn(model, step, ctx)
    if spec.makes_stage and source is not None and "parent" not in ctx.pending:
        ctx.record("parent", source)  # steps that start elsewhere (prune's `parent:`) record their own
    if spec.reference:
        ctx.record("reference", True)  # the report marks the row and ranks it apart; re-timing skips it
    if spec.makes_stage and spec.saves_model:
        ctx.save_model(model, ctx.stage)
        if ctx.stage == ctx.teacher_stage:
            ctx.teacher = ctx.load_model(ctx.stage)
    ctx.log(event="step_done", step=index, kind=step.kind, seconds=round(time.time() - started, 2))
    atomic_write_json(marker, {"fingerprint": key, "stage": ctx.stage, "kind": step.kind, "recorded": ctx.pending})
    return chain, model


def read_marker(marker: Path, say) -> dict | None:
    """A finished step's marker, or None (the step runs again) when it is missing or was edited into something else."""
    if not marker.is_file():
        return None
    try:
        done = json.loads(marker.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        done = None
    if not isinstance(done, dict) or not isinstance(done.get("recorded"), dict):
        say(f"{marker} is unreadable (edited or damaged): running its step again")
        return None
    return done


def retime_interleaved(ctx: RunContext, say) -> bool:
    """The protocol's last measurement: every benchmarked stage re-timed in interleaved rounds (eval/interleave.py)."""
    from eval.interleave import retime_stages

    bench = ctx.recipe.bench
    protocol = {**bench.model_dump(), "seq_lens": bench.seq_lens or [ctx.recipe.task.seq_len]}
    own = [s.tokenizer for s in ctx.stages.values() if s.tokenizer is not None]
    vocab_size = min(len(t) for t in [ctx.base_tokenizer, *own])  # ids every stage can read
    # eager torch re-timed in the same rounds, for the stages with a saved torch model
    torch_models = {name: (lambda name=name: ctx.load_model(name)) for name in ctx.stages if ctx.model_dir(name).is_dir()}
    timed = retime_stages({name: s.recorded for name, s in ctx.stages.items()}, ctx.run_dir, protocol, vocab_size, torch_models)
    if timed:
        say(f"timed {len(timed)} stages again in interleaved rounds (bench.interleave)")
    return bool(timed)


def run_peak(stages: list[dict], threads: int) -> dict | None:
    """The roofline's ceiling: ONNX Runtime's MatMul peak at the run's threads (eval/peak.py), measured
    at the end of every run that benchmarked a stage, so it describes the machine the latencies came from."""
    from eval.peak import measure_peaks

    return measure_peaks(threads) if is_main_process() and any(s.get("latency") for s in stages) else None


def traffic_protocol(ctx: RunContext, stages: list[dict]) -> dict | None:
    """Which texts the `bench` steps served and how (eval/traffic.py), when a stage was timed on them."""
    from eval.traffic import protocol_entry

    bench = ctx.recipe.bench
    if not (bench.traffic and any(s.get("traffic") for s in stages)):
        return None
    n_texts = min(bench.traffic_texts, len(ctx.data.texts["test"]))
    return protocol_entry(n_texts, ctx.recipe.task.seq_len, bench.traffic_batch_size, bench.warmup, bench.threads)


def write_results(ctx: RunContext, command: str, env: dict, interleaved: bool = False) -> Path | None:
    """results.json (eval/results.py, eval/results_schema.json): one entry per stage, the protocol, the baseline.
    Only the main process writes it."""
    from eval.bench import timing_settings
    from eval.results import build_protocol
    from eval.results import write_results as write

    if not is_main_process():
        return None
    recipe, data = ctx.recipe, ctx.data
    stages = [{"name": s.name, "kind": s.kind, **({"variant": s.lineage} if s.lineage else {}), **s.recorded}
              for s in ctx.stages.values()]
    task = {"name": data.name, "description": data.description, "n_test": len(data.labels["test"]),
            "seq_len": recipe.task.seq_len, "truncated": data.stats.get("n_truncated", {}), "data": data_changes(data.stats)}
    protocol = build_protocol(task=task, bench=recipe.bench.model_dump(), env=env, timing=timing_settings(recipe.bench.threads),
                              interleaved=interleaved, devices=["cpu"] + (["cuda"] if torch.cuda.is_available() else []),
                              peak=run_peak(stages, recipe.bench.threads), traffic=traffic_protocol(ctx, stages))
    return write(ctx.run_dir, run=recipe.name, command=command, protocol=protocol, baseline=ctx.baseline_stage, stages=stages)
