"""The run context and the runner (the step registry is `compress/run/registry.py`).

Steps that make a new model (train, distill, prune, ...) produce a
*stage*, saved under `runs/<name>/stages/<stage>/model`; the other steps (export, evaluate,
bench) act on the current stage. Files and metrics go only through `ctx`.

Each step is fingerprinted by a hash of everything that determines it: the code version, the
data, the seed, the teacher's shape, every step before it and its own config. A finished step
leaves a marker `runs/<name>/steps/NN-<name>.json` holding its fingerprint and what it
recorded; running the recipe again skips every step whose marker matches and resumes at the
first one that does not (a killed run resumes from the last finished step).

A recipe with `variants:` runs its `steps:` (the trunk) once, then each variant's steps from
the trunk's last stage on a copy of its model (`lineages` names their stages). The last
measurement re-times every stage in interleaved rounds (`eval/interleave.py`).

What steps need to know about stages is answered here, once: `RunContext.teacher_stage` (the
first stage with a torch model), `ctx.parent()` (the stage a step starts from), `ctx.index`
(the running step's position) and `stage_history` (the same answers for the recipe validator,
before anything runs).

A *reference* step (`reference=True`: the classical `baseline`) makes a row of its own, under its
own stage name, for comparison only: it never becomes the current stage, a parent, the teacher
or the default baseline, it has no torch model and no ONNX artifact, and, like a measuring step,
its fingerprint feeds no later step, so adding, editing or re-running it retrains nothing. This module imports no step and not the recipe schema
(`compress/run/config.py` imports it), so there is no import circle.
"""

import copy
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from pydantic import BaseModel

from compress.distributed import is_main_process, main_process_first, wait_for_everyone
from compress.io import append_jsonl, atomic_dir, atomic_write_json, atomic_write_text
from eval.model_card import write_cards
from compress.run.registry import STEPS, StepSpec, code_version, fingerprint, lineages, stage_history, teaches


@dataclass(frozen=True)
class ImportedTeacher:
    """A pretrained checkpoint the recipe's `teacher.from` names, imported before anything is written."""

    model: Any  # SlimformerForSequenceClassification with the checkpoint's weights (and head, or a fresh one)
    tokenizer: Any  # the checkpoint's own tokenizer: every stage of the run uses and saves it
    info: dict  # what was imported (compress.models.import_hf)
    digest: str  # of every file in the folder: a changed checkpoint retrains the teacher


@dataclass
class RunContext:
    """What steps share: the recipe, data, tokenizer, teacher, run folder and recorded results.

    `ctx.tokenizer` and `ctx.encoded` are the current stage's: a stage made by a step that sets
    its own (prune_vocab renumbers the vocabulary) has it, every other stage inherits the one of
    the stage it started from, and the first stages use the run's (`base_tokenizer`).
    """

    recipe: Any
    run_dir: Path
    data: Any  # compress.data.TaskData
    base_tokenizer: Any  # the run's transformers.PreTrainedTokenizerFast
    base_encoded: dict[str, dict]  # split -> {"input_ids": (N, T), "attention_mask": (N, T), "labels": (N,)} with it
    device: str
    imported: ImportedTeacher | None = None  # the pretrained checkpoint of `teacher.from`, when the recipe imports one
    base_dir: Path | None = None  # the recipe file's folder: relative paths in steps (distill's `unlabeled:`) start here
    teacher: Any = None  # the model of the lineage's teacher stage (`teacher_stage`), frozen
    stage: str | None = None  # the current stage's name
    stage_kinds: dict[str, str] = field(default_factory=dict)  # stage -> kind of the step that made it
    stage_variants: dict[str, str] = field(default_factory=dict)  # stage -> the variant it belongs to (not for trunk stages)
    steps: list = field(default_factory=list)  # the steps of the lineage being run: the trunk, + one variant's
    index: int = 0  # the running step's position in `steps`
    variant: str | None = None  # the variant being run (None: the recipe has none)
    results: dict[str, dict] = field(default_factory=dict)  # stage -> recorded fields
    pending: dict[str, Any] = field(default_factory=dict)  # what the running step recorded
    stage_origins: dict[str, str | None] = field(default_factory=dict)  # stage -> the stage it started from
    stage_tokenizers: dict[str, Any] = field(default_factory=dict)  # stage -> its own tokenizer (prune_vocab); others inherit
    stage_encoded: dict[str, dict] = field(default_factory=dict)  # those stages' splits encoded with it
    root_key: str = ""  # the run's own fingerprint (code, data, seed, teacher, task, import): what a pretrain step builds on

    def tokenizer_stage(self, stage: str | None = None) -> str | None:
        """The stage whose tokenizer `stage` (default: the current one) uses: itself or its nearest
        ancestor with one of its own; None: the run's tokenizer."""
        stage, seen = stage or self.stage, set()
        while stage is not None and stage not in self.stage_tokenizers and stage not in seen:
            seen.add(stage)
            stage = self.stage_origins.get(stage)
        return stage if stage in self.stage_tokenizers else None

    def tokenizer_of(self, stage: str | None = None):
        owner = self.tokenizer_stage(stage)
        return self.base_tokenizer if owner is None else self.stage_tokenizers[owner]

    @property
    def tokenizer(self):
        """The current stage's tokenizer (transformers.PreTrainedTokenizerFast)."""
        return self.tokenizer_of()

    @property
    def encoded(self) -> dict[str, dict]:
        """The task's splits encoded with the current stage's tokenizer."""
        owner = self.tokenizer_stage()
        if owner is None:
            return self.base_encoded
        if owner not in self.stage_encoded:
            from compress.data import encode_task

            self.stage_encoded[owner] = encode_task(self.data, self.stage_tokenizers[owner], self.recipe.task.seq_len)
        return self.stage_encoded[owner]

    def set_tokenizer(self, tokenizer, encoded: dict[str, dict] | None = None) -> None:
        """Give the current stage a tokenizer of its own (and the splits encoded with it); its descendants inherit it."""
        self.stage_tokenizers[self.stage] = tokenizer
        self.stage_encoded.pop(self.stage, None)
        if encoded is not None:
            self.stage_encoded[self.stage] = encoded

    @property
    def teacher_stage(self) -> str | None:
        """The teacher (what distillation and recovery learn from): the stage of the lineage's latest
        `train`-like step run so far (one that builds a model without needing one: a variant with a
        train step of its own has its own teacher), else the first stage with a torch model of its
        own. Pretrained encoders (`pretrain`) are never the teacher."""
        lineage = [s for s in self.steps[: self.index + 1] if s.name in self.stage_kinds and teaches(s.kind)]
        roots = [s.name for s in lineage if STEPS[s.kind].makes_stage and not STEPS[s.kind].needs_model]
        if roots:
            return roots[-1]
        return next((s for s, kind in self.stage_kinds.items() if teaches(kind)), None)

    @property
    def baseline_stage(self) -> str | None:
        """The stage every other is compared with (agreement, the report's deltas): report.baseline, else
        the run's first teacher (the trunk's)."""
        return self.recipe.report.baseline or next((s for s, kind in self.stage_kinds.items() if teaches(kind)), None)

    def parent(self, name: str | None = None) -> str | None:
        """The stage the running step starts from: `name` if given, else the last stage with a torch model."""
        return stage_history(self.steps, self.index, name)[0]

    def stage_dir(self, stage: str | None = None) -> Path:
        return self.run_dir / "stages" / (stage or self.stage)

    def model_dir(self, stage: str | None = None) -> Path:
        return self.stage_dir(stage) / "model"

    def onnx_dir(self, stage: str | None = None) -> Path:
        return self.stage_dir(stage) / "onnx"

    def record(self, key: str, value: Any) -> None:
        """Record a result field of the current stage (goes to results.json and the report)."""
        self.results.setdefault(self.stage, {})[key] = value
        self.pending[key] = value

    def log(self, **metrics: Any) -> None:
        """Append one line to metrics.jsonl, tagged with the current stage."""
        append_jsonl(self.run_dir / "metrics.jsonl", {"time": round(time.time(), 3), "stage": self.stage, **metrics})

    def save_model(self, model, stage: str) -> None:
        """Save a stage's model and tokenizer atomically (safetensors + config + model code).

        With several processes the main one writes and the others wait, so all can then load it.
        """
        with atomic_dir(self.model_dir(stage)) as tmp:
            model.save_pretrained(tmp)
            self.tokenizer_of(stage).save_pretrained(tmp)
        wait_for_everyone()

    def load_model(self, stage: str):
        from transformers import AutoModelForSequenceClassification

        from compress.models import register_auto_classes

        register_auto_classes()
        model = AutoModelForSequenceClassification.from_pretrained(self.model_dir(stage))
        return model.eval()


PATH_FIELDS = ("unlabeled", "extra_texts", "corpus")  # step fields that name files, relative to the recipe's folder


def dump_recipe(recipe: BaseModel, base_dir: Path | None = None) -> str:
    """The resolved recipe as YAML, re-runnable as is from anywhere: relative file paths are made
    absolute against `base_dir` (the recipe's folder), and an imported teacher keeps only `from`
    (and `pooling` when set), since the checkpoint fixes its shape."""
    data = json.loads(recipe.model_dump_json(by_alias=True))

    def absolute(path):
        if base_dir is None or not isinstance(path, str) or path.startswith("~") or Path(path).is_absolute():
            return path
        return str((base_dir / path).resolve())

    if recipe.teacher.imports():
        data["teacher"] = {"from": absolute(data["teacher"]["from"]),
                           **({"pooling": data["teacher"]["pooling"]} if "pooling" in recipe.teacher.model_fields_set else {})}
        data["task"].pop("tokenizer", None)  # the checkpoint brings its own
    if data["task"].get("kind") == "files":
        data["task"].update({k: absolute(data["task"][k]) for k in ("train", "validation", "test") if data["task"].get(k)})
    for steps in [data["steps"], *(data.get("variants") or {}).values()]:
        for step in steps:
            for part in (step, step.get("recover") or {}):  # recovery names its transfer set's files too
                part.update({k: [absolute(p) for p in part[k]] for k in PATH_FIELDS if isinstance(part.get(k), list)})
    return yaml.safe_dump(data, sort_keys=False)


def save_tokenizer(tokenizer, folder: Path) -> None:
    with atomic_dir(folder) as tmp:
        tokenizer.save_pretrained(tmp)


def import_teacher(recipe, data, base_dir: Path) -> ImportedTeacher:
    """Import `teacher.from` (relative to the recipe's folder); CheckpointError/RecipeError name what is wrong."""
    from compress.errors import CheckpointError, RecipeError
    from compress.models.import_hf import import_pretrained

    folder = Path(recipe.teacher.from_)
    folder = folder if folder.is_absolute() else (base_dir / folder)
    if not folder.is_dir():
        raise CheckpointError(f"teacher.from: {folder} is not a folder; give a local Hugging Face checkpoint folder (config.json, "
                              "*.safetensors, tokenizer files), relative to the recipe file, e.g. the one "
                              "`python -m compress.models.fetch_minilm --out models/all-MiniLM-L6-v2` writes")
    pooling = recipe.teacher.pooling if "pooling" in recipe.teacher.model_fields_set else None
    imported = import_pretrained(folder, label_names=data.label_names, pooling=pooling, seed=recipe.seed)
    if recipe.task.seq_len > imported.info["max_len"]:
        raise RecipeError(f"task.seq_len {recipe.task.seq_len} exceeds the {imported.info['max_len']} positions of the imported "
                          f"teacher ({folder}); set task.seq_len <= {imported.info['max_len']}")
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode())
        h.update(path.read_bytes())
    return ImportedTeacher(imported.model, imported.tokenizer, imported.info, h.hexdigest()[:16])


def prepare_tokenizer(recipe, data, run_dir: Path, imported: ImportedTeacher | None = None):
    """The run's tokenizer: the imported teacher's own, or one trained on the training split
    (reused from the run folder if the data is unchanged)."""
    from transformers import AutoTokenizer

    from compress.data import train_tokenizer

    folder = run_dir / "tokenizer"
    if imported is not None:
        key = fingerprint("imported", imported.digest)
    else:
        key = fingerprint(data.fingerprint, recipe.task.tokenizer.model_dump(), recipe.task.seq_len, code_version())
    stamp = folder / "fingerprint.txt"
    if stamp.is_file() and stamp.read_text() == key:
        return AutoTokenizer.from_pretrained(folder)
    if imported is not None:
        tokenizer = imported.tokenizer
    else:
        tokenizer = train_tokenizer(data.texts["train"], recipe.task.tokenizer, recipe.task.seq_len)
    with atomic_dir(folder) as tmp:
        tokenizer.save_pretrained(tmp)
        (tmp / "fingerprint.txt").write_text(key)
    return tokenizer


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        from compress.errors import RecipeError

        raise RecipeError("device: cuda, but torch sees no CUDA device; use device: cpu or auto")
    return device


def outputs_exist(ctx: RunContext, spec: StepSpec, done: dict) -> bool:
    """A finished step's folders are still there (a kill between two renames can lose one)."""
    folders = [ctx.model_dir()] if spec.makes_stage and spec.saves_model else []
    recorded = done.get("recorded", {})
    folders += [ctx.run_dir / recorded[key] for key in ("onnx_dir", "onnx_fp16_dir", "artifact_dir") if recorded.get(key)]
    return all(f.is_dir() for f in folders)


def remove_stale_temporaries(run_dir: Path) -> None:
    """Delete what a killed run left half-written: hidden `.*.tmp` files and folders (see compress/io.py)."""
    import shutil

    for path in sorted(run_dir.rglob(".*.tmp"), reverse=True):
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def run_recipe(recipe, recipe_path: Path | None, runs_dir: Path, command: str = "", console=None) -> Path:
    """Run every step of `recipe` in `runs_dir/<name>/`, resuming finished steps. Returns the run folder."""
    from transformers.utils import logging as hf_logging

    from compress.data import encode_task, load_task
    from eval.env import collect_env

    say = console.print if console is not None else print
    hf_logging.disable_progress_bar()  # transformers' own bars ("Loading weights", "Writing model shards") would interleave with ours
    # everything that can fail on bad input runs before the first file is written
    device = resolve_device(recipe.device)
    base_dir = recipe_path.parent if recipe_path else Path.cwd()
    data = load_task(recipe.task, seed=recipe.seed, base_dir=base_dir)
    imported = import_teacher(recipe, data, base_dir) if recipe.teacher.imports() else None
    check_step_files(recipe, base_dir)

    run_dir = (Path(runs_dir) / recipe.name).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    if is_main_process():  # several processes (accelerate launch): only the main one writes (compress/distributed.py)
        remove_stale_temporaries(run_dir)
    atomic_write_text(run_dir / "recipe.yaml", f"# resolved recipe; re-run with: slimformer run {run_dir / 'recipe.yaml'}\n" + dump_recipe(recipe, base_dir))
    torch.manual_seed(recipe.seed)
    with main_process_first():  # the others load the tokenizer the main process trained and saved
        tokenizer = prepare_tokenizer(recipe, data, run_dir, imported)
    encoded = encode_task(data, tokenizer, recipe.task.seq_len)
    ctx = RunContext(recipe, run_dir, data, tokenizer, encoded, device, imported=imported, base_dir=base_dir)
    env = collect_env(recipe.bench.threads)
    atomic_write_json(run_dir / "env.json", env)
    key = fingerprint(code_version(), data.fingerprint, recipe.seed, recipe.teacher.model_dump(), recipe.task.model_dump(),
                      imported.digest if imported else None)
    model, ctx.steps, ctx.root_key = None, list(recipe.steps), key
    for index, step in enumerate(recipe.steps):  # the trunk: the teacher and whatever every variant shares
        key, model = run_step(ctx, index, step, key, model, say)
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


def check_step_files(recipe, base_dir: Path) -> None:
    """Read what each step of every lineage will read from files (a config's `check_files(base_dir)`),
    so a missing or empty file is an error before anything trains or is written."""
    for _, steps in lineages(recipe):
        for step in steps:
            for part in (step, getattr(step, "recover", None)):  # a step's own files, and its recovery's transfer set
                if hasattr(part, "check_files"):
                    part.check_files(base_dir)


def run_step(ctx: RunContext, index: int, step, previous: str, model, say) -> tuple[str, Any]:
    """Run (or reuse, when its marker's fingerprint matches) one step. Returns (its fingerprint, the model)."""
    spec = STEPS[step.kind]
    if not spec.reference:
        return run_chained_step(ctx, index, step, previous, model, say)
    current = ctx.stage  # a reference step records under its own name; the current stage stays what it was
    ctx.stage_kinds[step.name] = step.kind
    if ctx.variant is not None:
        ctx.stage_variants[step.name] = ctx.variant
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
        ctx.stage_origins[step.name] = ctx.parent(explicit) if explicit else source
        ctx.stage_tokenizers.pop(step.name, None)
        ctx.stage = step.name
        ctx.stage_kinds[step.name] = step.kind
        if ctx.variant is not None:
            ctx.stage_variants[step.name] = ctx.variant
    label = f"{index} {ctx.variant}" if ctx.variant and index >= len(recipe.steps) else f"{index}"
    done = json.loads(marker.read_text()) if marker.is_file() else None
    if done and done.get("fingerprint") == key and outputs_exist(ctx, spec, done):
        say(f"[{label}] {step.kind} {ctx.stage}: cached")
        ctx.results.setdefault(ctx.stage, {}).update(done["recorded"])
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


def retime_interleaved(ctx: RunContext, say) -> bool:
    """The protocol's last measurement: every benchmarked stage re-timed in interleaved rounds (eval/interleave.py)."""
    from eval.interleave import retime_stages

    bench = ctx.recipe.bench
    protocol = {**bench.model_dump(), "seq_lens": bench.seq_lens or [ctx.recipe.task.seq_len]}
    vocab_size = min(len(t) for t in [ctx.base_tokenizer, *ctx.stage_tokenizers.values()])  # ids every stage can read
    # eager torch re-timed in the same rounds, for the stages with a saved torch model
    torch_models = {name: (lambda name=name: ctx.load_model(name)) for name in ctx.results if ctx.model_dir(name).is_dir()}
    timed = retime_stages(ctx.results, ctx.run_dir, protocol, vocab_size, torch_models)
    if timed:
        say(f"timed {len(timed)} stages again in interleaved rounds (bench.interleave)")
    return bool(timed)


def run_peak(stages: list[dict], threads: int) -> dict | None:
    """The roofline's ceiling: ONNX Runtime's MatMul peak at the run's threads (eval/peak.py), measured
    at the end of every run that benchmarked a stage, so it describes the machine the latencies came from."""
    from eval.peak import measure_peaks

    return measure_peaks(threads) if is_main_process() and any(s.get("latency") for s in stages) else None


def write_results(ctx: RunContext, command: str, env: dict, interleaved: bool = False) -> Path:
    """results.json: one entry per stage, the protocol, and the baseline (see eval/results_schema.json)."""
    from eval.bench import timing_settings

    recipe, bench = ctx.recipe, ctx.recipe.bench
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    stages = []
    for name, kind in ctx.stage_kinds.items():
        recorded = ctx.results.get(name, {})
        variant = {"variant": ctx.stage_variants[name]} if name in ctx.stage_variants else {}
        stages.append({"name": name, "kind": kind, **variant, **recorded})
    results = {
        "schema_version": 1,
        "run": recipe.name,
        "command": command,
        "protocol": {
            "task": ctx.data.name,
            "task_description": ctx.data.description,
            "split": "test",
            "n_test": len(ctx.data.labels["test"]),
            "seq_len": recipe.task.seq_len,
            "batch_sizes": bench.batch_sizes,
            "seq_lens": bench.seq_lens or [recipe.task.seq_len],
            "threads": bench.threads,
            "warmup": bench.warmup,
            "repeats": bench.repeats,
            "interleaved": interleaved,
            "timing": timing_settings(bench.threads),
            "devices": devices,
            "truncated": ctx.data.stats.get("n_truncated", {}),
            "versions": env.get("versions", {}),
            "cpu": f"{env.get('cpu')} ({env.get('n_cores_usable')} usable cores)",
            "gpu": ", ".join(env.get("cuda_devices") or []) or None,
            "peak": run_peak(stages, bench.threads),
        },
        "baseline": ctx.baseline_stage,
        "stages": stages,
    }
    path = ctx.run_dir / "results.json"
    atomic_write_json(path, results)
    write_cards(results, ctx.run_dir, atomic_write_text)  # each model/ folder's README.md, with these measurements
    return path
