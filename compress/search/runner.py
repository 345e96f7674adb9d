"""`slimformer compress`: search the steps and shapes that compress a teacher to a budget, and keep the Pareto front.

Phases, all bounded by the time budget (`--time`):
1. *Teacher*: a trunk recipe (`teacher.from` the user's model kept as it is, or the user recipe's
   steps up to its teacher) is run once: the teacher's validation accuracy, its ONNX artifact.
2. *Sensitivity* of the teacher (`sensitivity.py`), once, cached: it decides which layers, heads,
   neurons and module groups a candidate cuts or quantizes.
3. *Latency model* of this machine (`latency.py`), fitted in a process of its own, cached per
   machine: it predicts a candidate's latency before it trains, and no candidate whose prediction
   misses a hard budget by more than the model's measured error is trained.
4. *Cheap estimates*: optuna (Akiba et al. 2019) draws candidates (`space.py`) with its
   multi-objective TPE sampler (accuracy up, cost down, budgets as constraints) through its
   ask/tell interface; each is built by running its recipe (the existing steps through the
   runner) with every training capped at a fraction of an epoch.
5. *Full recovery*: successive halving (Jamieson & Talwalkar 2016): a third of the cheap
   candidates (at least `MIN_FULL`) train again at full fidelity, as long as the time allows.
   With an accuracy floor and a cost to minimise, they are the cheapest ones whose estimate is
   within reach of the floor (`reach`), cheapest first but the cheapest already over the floor
   second (`front.promote`); otherwise the best by non-dominated front
   (Deb et al. 2002), then accuracy.
6. *Final*: the front and the choice use full-fidelity validation accuracy only; the test split is
   then scored for the front alone, the chosen model's artifacts are copied to `chosen/`, its
   recipe written as `best.yaml` (`slimformer run best.yaml` rebuilds it from the teacher), and the
   report drawn (`eval/search_report.py`).

Trials are recipes run by the ordinary runner in `runs/<name>/trials/` (stage names prefixed by
the trial), so `best.yaml` is the same computation; with `isolate` (the CLI's default) each runs in
a process of its own that dies with the search. Their candidates never see the test split: a
`files` task's recipes name the validation file as their test file, vocabulary pruning keeps the
tokens of the training and validation texts only, and every `evaluate` scores validation. Results
go to `trials.jsonl` (append-only) and the optuna study to a journal file, so a search killed at
any point resumes without repeating a finished trial.
"""

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

from compress.errors import SlimformerError
from compress.io import append_jsonl
from compress.search import latency as latency_mod
from compress.search import timing
from compress.search.config import SearchConfig
from compress.search.front import family_out_of_reach, promote, reach
from compress.search.space import Candidate, Fidelity, TeacherShape, anchors, candidate_steps, suggest
from compress.search.trials import (
    TRIALS_RUN,
    Trials,
    TrialTimeout,
    child_env,
    die_with_parent,
    final_stage,
    public,
    shape_dict,
    stage_prefix,
    student_bytes,
    time_artifact,
)
from compress.search.trunk import blind, default_name, pruned_vocab_size, transfer_size, trunk_recipe

PHASES = ("teacher", "sensitivity", "latency model", "cheap estimates", "full recovery", "final scoring")
FINAL_RESERVE = 0.1  # share of the time budget kept for the final phase (test scoring, re-timing, report)
CHEAP_SHARE = 0.45  # of what the search phases have, the cheap estimates' share; the rest goes to full recovery
ETA = 3  # successive halving: a third of the cheap candidates go on to full recovery
MIN_FULL = 8  # ... but at least this many when the time allows (the rank correlation needs points)
STOP_GRACE_S = 300  # the command ends within --time plus this


# --------------------------------------------------------------------------- the search


class Search:
    """One `slimformer compress` invocation (see the module docstring)."""

    active: "Search | None" = None  # the search running in this process (its `phase` says what it is doing)

    def __init__(self, cfg: SearchConfig, console=None):
        cfg.check()
        self.cfg, self.console = cfg, console
        self.start = time.time()
        self.deadline = self.start + cfg.time_s
        self.phase_seconds: dict[str, float] = {}
        self.phase = "checks"
        self.ended = "completed"
        self.say = console.print if console is not None else print

    # ------------------------------------------------------------------ helpers

    def left(self) -> float:
        return self.deadline - time.time()

    @contextlib.contextmanager
    def timed_phase(self, name: str):
        self.phase, started = name, time.time()
        if hasattr(self, "progress"):
            self.show()
        try:
            yield
        finally:
            self.phase_seconds[name] = self.phase_seconds.get(name, 0.0) + round(time.time() - started, 2)

    def open_progress(self):
        """A rich progress line: the phase, trials done, the best candidate under the budget so far, time left."""
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        progress = Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=self.console,
                            transient=False, disable=self.console is None)
        self.bar = progress.add_task("search", total=self.cfg.time_s)
        self.progress = progress
        progress.start()
        if self.console is not None:
            self.say = progress.console.print
        return progress

    def show(self) -> None:
        """Refresh the progress line (and print it when there is no console)."""
        done = getattr(self, "done", {})
        n_cheap = sum(1 for (_, f), e in done.items() if f == "cheap" and e.get("state") == "complete")
        full = [{**e["result"], "trial": n} for (n, f), e in done.items() if f == "full" and e.get("state") == "complete"]
        best = ""
        if full and hasattr(self, "teacher_acc"):
            from compress.search.front import choose

            chosen, missed = choose(full, self.cfg.budget, self.teacher_acc)
            best = (f" | {'best under budget' if not missed else 'nearest (misses the budget)'}: trial {chosen['trial']} "
                    f"{chosen['accuracy']:.4f}, {chosen['latency_ms']:.2f} ms, {chosen['bytes'] / 1e6:.2f} MB")
        text = f"{self.phase}: {n_cheap} cheap, {len(full)} full{best} | {max(self.left(), 0) / 60:.0f} min left"
        self.progress.update(self.bar, completed=min(time.time() - self.start, self.cfg.time_s), description=text)
        if self.console is None:
            print(text)

    def record(self, entry: dict) -> None:
        append_jsonl(self.dir / "trials.jsonl", {"time": round(time.time(), 3), **entry})

    def recorded(self) -> dict[tuple[int, str], dict]:
        """Finished trial results of earlier invocations: (trial number, fidelity) -> entry."""
        path, out = self.dir / "trials.jsonl", {}
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue  # a line cut by a kill: that trial runs again
                if entry.get("event") == "trial":
                    out[(entry["number"], entry["fidelity"])] = entry
        return out

    # ------------------------------------------------------------------ phases

    def run(self) -> Path:
        cfg = self.cfg
        Search.active = self
        recipe, base = trunk_recipe(cfg)
        name = cfg.name or default_name(Path(cfg.teacher))
        self.dir = (cfg.runs_dir / name).resolve()
        self.name = name
        self.trunk = recipe
        # the startup checks: every file opens (the test file included, never scored before the end), the recipe validates
        from compress.run.config import validate_recipe

        validate_recipe(recipe, "the search's teacher recipe")
        self.check_data(recipe)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.trials = Trials(self.dir, cfg.isolate, self.say)
        interrupted = False
        previous = signal.signal(signal.SIGTERM, raise_interrupt) if threading_main() else None
        progress = self.open_progress()
        try:
            with self.timed_phase("teacher"):
                self.prepare_teacher()
            with self.timed_phase("sensitivity"):
                self.measure_sensitivity()
            with self.timed_phase("latency model"):
                self.fit_latency()
            self.open_study()
            with self.timed_phase("cheap estimates"):
                self.cheap_phase()
            with self.timed_phase("full recovery"):
                self.full_phase()
        except KeyboardInterrupt:
            interrupted = True
            self.ended = "interrupted"
            self.say("interrupted: keeping what was found so far")
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            progress.stop()
            self.say = self.console.print if self.console is not None else print
        if not hasattr(self, "teacher_acc"):  # stopped before the teacher was measured: nothing to choose from
            raise SlimformerError("the search stopped before its teacher was measured; run the same command again to resume")
        with self.timed_phase("final scoring"):
            self.finish(interrupted)
        return self.dir

    def check_data(self, recipe: dict) -> None:
        from compress.data import load_task
        from compress.run.config import validate_recipe

        loaded = validate_recipe(recipe, "the search's teacher recipe")
        self.data = load_task(loaded.task, seed=loaded.seed, base_dir=Path.cwd())

    def prepare_teacher(self) -> None:
        """Run the trunk (teacher as it is, exported, scored on validation) and time the teacher's artifact."""
        from compress.models import register_auto_classes

        register_auto_classes()
        self.say(f"[teacher] {self.trunk['teacher'].get('from') or self.cfg.teacher}")
        stages = self.trials.run(blind(self.trunk), "teacher")
        teacher = next(s for s in stages.values() if s["kind"] == "train")
        self.teacher_stage = teacher["name"]
        self.teacher_acc = teacher["val_accuracy"]
        onnx_dir = self.dir / TRIALS_RUN / teacher["onnx_dir"]
        self.teacher_onnx = onnx_dir
        config = json.loads((onnx_dir / "config.json").read_text())
        self.vocab_size = config["vocab_size"]
        self.seq_len = self.trunk["task"].get("seq_len") or 128
        self.teacher_latency = time_artifact(onnx_dir, self.cfg.batch_size, self.seq_len, self.cfg.threads, self.vocab_size)
        self.teacher_bytes = (onnx_dir / "model.onnx").stat().st_size
        self.floor = self.cfg.budget.floor(self.teacher_acc)
        self.say(f"[teacher] validation accuracy {self.teacher_acc:.4f}, {self.teacher_latency:.2f} ms at batch "
                 f"{self.cfg.batch_size} x {self.seq_len}, {self.teacher_bytes / 1e6:.1f} MB")

    def open_context(self):
        """The trunk's run context in this process (its steps cached): the teacher model and encoded splits."""
        from compress.run.config import validate_recipe
        from compress.run.runner import open_run, run_trunk

        recipe = validate_recipe(blind(self.trunk), "the search's teacher recipe")
        ctx, _, key = open_run(recipe, None, self.dir)
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            _, model = run_trunk(ctx, key, print)
        return ctx, model

    def measure_sensitivity(self) -> None:
        from compress.run.registry import code_version
        from compress.search.sensitivity import cached_sensitivity, measure_sensitivity

        ctx, teacher = self.open_context()
        self.config = teacher.config
        self.teacher_params = sum(p.numel() for p in teacher.parameters())
        self.pruned_vocab = pruned_vocab_size(ctx, self.unlabeled_paths())
        self.teacher_shape = TeacherShape.of(teacher.config, self.pruned_vocab)
        key = (ctx.root_key, code_version(), self.teacher_acc)
        self.sensitivity = cached_sensitivity(self.dir / "sensitivity.json", key,
                                              lambda: measure_sensitivity(ctx, teacher, self.teacher_onnx / "model.onnx",
                                                                          self.cfg.threads, self.say))
        self.n_transfer = transfer_size(ctx, self.unlabeled_paths())

    def unlabeled_paths(self) -> list[str]:
        return [str(Path(p).resolve()) for p in self.cfg.unlabeled]

    def fit_latency(self) -> None:
        """The latency model, fitted in a process of its own (nothing trains beside it), bounded by its share of the time;
        or one fitted before (`latency_model`: the latency_model.json of an earlier search on this machine)."""
        out = self.dir / "latency_model.json"
        if self.cfg.latency_model is not None:
            if self.cfg.latency_model.resolve() != out:
                shutil.copyfile(self.cfg.latency_model, out)
            self.load_latency(out)
            return
        config_path = self.teacher_onnx / "config.json"
        budget = max(60.0, 0.12 * self.cfg.time_s)
        args = [sys.executable, "-m", "compress.search.timing", "--teacher-config", str(config_path),
                "--batch", str(self.cfg.batch_size), "--seq-len", str(self.seq_len), "--threads", str(self.cfg.threads),
                "--fit", str(self.cfg.latency_fit), "--holdout", str(self.cfg.latency_holdout), "--out", str(out),
                "--deadline-s", str(int(budget)), "--seed", str(self.cfg.seed)]
        self.say(f"[latency model] timing random shapes at batch {self.cfg.batch_size} x {self.seq_len} "
                 f"(at most {budget / 60:.0f} min)")
        with open(self.dir / "logs" / "latency.log", "w") as log:
            proc = subprocess.run(args, stdout=log, stderr=subprocess.STDOUT, env=child_env(), preexec_fn=die_with_parent)
        if proc.returncode != 0:
            tail = (self.dir / "logs" / "latency.log").read_text(errors="replace").strip().splitlines()[-3:]
            raise SlimformerError(f"the latency model failed (exit {proc.returncode}): {' | '.join(tail)}")
        self.load_latency(out)

    def load_latency(self, path: Path) -> None:
        try:
            self.latency_report = json.loads(path.read_text())
            self.latency = latency_mod.LatencyModel.load(path)
        except (OSError, ValueError, KeyError) as e:
            raise SlimformerError(f"{path}: not a latency model ({type(e).__name__}: {e}); leave --latency-model out to fit "
                                  "one on this machine") from None
        errors = self.latency_report.get("holdout") or {}
        # the margin a hard budget gets before a candidate is skipped untrained: the model's measured error (15% unmeasured)
        self.latency_error = max([v for k, v in errors.items() if k in ("fp32", "int8") and isinstance(v, (int, float))]
                                 or [0.15])

    # ------------------------------------------------------------------ the study

    def open_study(self) -> None:
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = JournalStorage(JournalFileBackend(str(self.dir / "study.journal")))
        # constraints come with each told trial (Trial.set_constraint, optuna >= 5); `group` is marked experimental
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=self.cfg.seed, multivariate=True, group=True, n_startup_trials=8)
        self.study = optuna.create_study(study_name="compress", storage=storage, sampler=sampler, load_if_exists=True,
                                         directions=["maximize", "minimize"])
        self.done = self.recorded()
        self.candidates: dict[int, Candidate] = {}
        if not self.study.trials:  # a new study: rule-based anchors first (space.anchors), then the random start
            for params in anchors(self.teacher_shape, self.cfg.families):
                self.study.enqueue_trial(params)
        # trials a killed search left running: their recorded result is told, the others run again with the same choices
        for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            entry = self.done.get((t.number, "cheap"))
            if entry is not None and entry.get("state") == "complete":
                self.tell(t.number, entry)
            else:
                self.study.tell(t.number, state=optuna.trial.TrialState.FAIL)
                if entry is None:
                    self.study.enqueue_trial(t.params, skip_if_exists=False)

    def cost(self, point: dict) -> float:
        return point["latency_ms"] if self.cfg.budget.cost == "latency" else point["bytes"]

    def tell(self, number: int, entry: dict) -> None:
        """Report a cheap trial to optuna: its objectives (accuracy, cost) and constraint values, or that it was skipped."""
        import optuna

        if entry.get("state") != "complete":
            state = optuna.trial.TrialState.PRUNED if entry.get("state") == "skipped" else optuna.trial.TrialState.FAIL
            self.study.tell(number, state=state)
            return
        point = entry["result"]
        # <= 0: met. Against the reach, not the floor: a cheap estimate runs below its full one (front.reach)
        acc_gap = (reach(self.cfg.budget, self.teacher_acc) - point["accuracy"]) if self.floor is not None else 0.0
        caps = sum(m["relative"] for m in self.cfg.budget.misses(point, self.teacher_acc) if m["budget"] != "max_drop")
        trial_id = self.study._storage.get_trial_id_from_study_id_trial_number(self.study._study_id, number)
        trial = optuna.trial.Trial(self.study, trial_id)
        trial.set_constraint("accuracy_floor", acc_gap)  # the sampler prefers feasible trials
        trial.set_constraint("hard_caps", caps)
        self.study.tell(number, [point["accuracy"], self.cost(point)])

    def predict(self, c: Candidate) -> dict:
        """Predicted latency (ms) and size (bytes) of candidate `c` at the budget's batch size and length."""
        if c.family == "transformer":
            return {"latency_ms": self.latency.predict(c.shape, self.cfg.batch_size, self.seq_len),
                    "bytes": self.latency.size_bytes(c.shape)}
        ms = timing.measure_student(c.family, c.params["student_dim"], c.params["student_dim"], 1, True, self.config,
                                         self.cfg.batch_size, self.seq_len, self.cfg.threads)
        return {"latency_ms": ms, "bytes": student_bytes(c, self.config)}

    def infeasible(self, predicted: dict) -> str | None:
        """Why a prediction misses a hard budget by more than the model's measured error (None: it may fit)."""
        b, err = self.cfg.budget, self.latency_error
        if b.max_latency_ms is not None and predicted["latency_ms"] > b.max_latency_ms * (1 + err):
            return f"predicted {predicted['latency_ms']:.3g} ms > {b.max_latency_ms:g} ms + {100 * err:.0f}% model error"
        if b.max_mb is not None and predicted["bytes"] > b.max_mb * 1e6 * 1.05:
            return f"predicted {predicted['bytes'] / 1e6:.3g} MB > {b.max_mb:g} MB + 5%"
        return None

    def cheap_fidelity(self) -> Fidelity:
        """Every training capped at a quarter of an epoch of the transfer set (at least 10 steps)."""
        steps_per_epoch = math.ceil(self.n_transfer / 32)
        return Fidelity("cheap", 1, 1, max_steps=max(10, steps_per_epoch // 4))

    def run_candidate(self, number: int, c: Candidate, fidelity: Fidelity, deadline: float) -> dict:
        """Build candidate `c` at `fidelity` by running its recipe; measure its artifact. Returns the trial's result."""
        prefix = stage_prefix(number, fidelity.name)
        steps = candidate_steps(c, prefix, fidelity, self.unlabeled_paths())
        recipe = {**blind(self.trunk), "steps": self.trunk["steps"] + steps}
        started = time.time()
        stages = self.trials.run(recipe, f"{prefix.rstrip('.')}", deadline)
        last = final_stage(stages, prefix)
        onnx_dir = self.dir / TRIALS_RUN / last["onnx_dir"]
        vocab = json.loads((onnx_dir / "config.json").read_text())["vocab_size"]
        ms = time_artifact(onnx_dir, self.cfg.batch_size, self.seq_len, self.cfg.threads, vocab)
        return {"accuracy": last["validation_accuracy"], "latency_ms": ms, "bytes": (onnx_dir / "model.onnx").stat().st_size,
                "stage": last["name"], "onnx_dir": str(onnx_dir.relative_to(self.dir)),
                "seconds": round(time.time() - started, 2), "steps": steps}

    def cheap_phase(self) -> None:
        """Draw and build cheap candidates until this phase's share of the time is spent."""
        search_time = max(self.left() - FINAL_RESERVE * self.cfg.time_s, 0.0)
        self.cheap_deadline = time.time() + CHEAP_SHARE * search_time
        self.full_deadline = self.deadline - FINAL_RESERVE * self.cfg.time_s
        fidelity = self.cheap_fidelity()
        n_cheap = sum(1 for (_, f), e in self.done.items() if f == "cheap")
        dead_families: set[str] = set()
        while time.time() < self.cheap_deadline and (self.cfg.max_trials is None or n_cheap < self.cfg.max_trials):
            trial = self.study.ask()
            c = suggest(trial, self.teacher_shape, self.sensitivity, self.cfg.families)
            self.candidates[trial.number] = c
            entry = {"event": "trial", "number": trial.number, "fidelity": "cheap", "family": c.family,
                     "params": public(c.params), "shape": shape_dict(c), "steps_described": c.describe()}
            dead = None if c.family == "transformer" else family_out_of_reach(
                [e["result"]["accuracy"] for (_, f), e in self.done.items()
                 if f == "cheap" and e.get("family") == c.family and e.get("state") == "complete"],
                self.cfg.budget, self.teacher_acc)
            try:
                if dead is not None:  # not worth a prediction either (a student family's is a timing)
                    entry.update(state="skipped", skipped=f"{c.family} students: {dead}")
                    dead_families.add(c.family)
                else:
                    entry["predicted"] = self.predict(c)
                    why = self.infeasible(entry["predicted"])
                    if why is not None:
                        entry.update(state="skipped", skipped=why)
                    elif c.family == "transformer" and not c.describe():
                        entry.update(state="skipped", skipped="the teacher itself")
                    else:
                        self.say(f"[cheap {trial.number}] {'; '.join(c.describe())}")
                        result = self.run_candidate(trial.number, c, fidelity, self.cheap_deadline)
                        entry.update(state="complete", result=result)
                        n_cheap += 1
            except TrialTimeout as e:
                entry.update(state="timeout", error=str(e))
            except SlimformerError as e:
                entry.update(state="failed", error=str(e)[:500])
                self.say(f"[cheap {trial.number}] failed: {str(e)[:200]}")
            self.record(entry)
            self.done[(trial.number, "cheap")] = entry
            self.tell(trial.number, entry)
            self.show()
            if entry["state"] == "timeout":
                break
            if dead_families >= set(self.cfg.families):  # nothing left worth drawing
                self.say(f"[cheap] every family is out of reach: {dead}")
                break
        self.say(f"[cheap] {n_cheap} candidates estimated; {len(self.study.trials)} drawn")

    def promoted(self) -> list[dict]:
        """Cheap candidates that go on to full recovery, in order (`front.promote`); those whose measured latency or size
        misses a hard budget stay behind (it does not change with training)."""
        cheap = [e for (n, f), e in self.done.items() if f == "cheap" and e.get("state") == "complete"]
        b = self.cfg.budget
        cheap = [e for e in cheap if not [m for m in b.misses(e["result"], self.teacher_acc) if m["budget"] != "max_drop"]]
        if not cheap:
            return []
        keep = max(math.ceil(len(cheap) / ETA), min(MIN_FULL, len(cheap)))
        return [cheap[i] for i in promote([e["result"] for e in cheap], b, self.teacher_acc, keep)]

    def full_fidelity(self, entry: dict, n_full: int) -> Fidelity:
        """Epochs that fit this candidate's share of the full-recovery time, from its cheap run's speed (at least 1)."""
        if self.cfg.full_epochs is not None:
            return Fidelity("full", distill_epochs=self.cfg.full_epochs, recover_epochs=self.cfg.full_epochs)
        cheap = self.cheap_fidelity()
        steps = entry["result"]["steps"]
        n_trainings = sum(1 for s in steps if s["kind"] in ("distill", "prune_width", "prune_heads", "prune_ffn"))
        per_step = entry["result"]["seconds"] / max(n_trainings * cheap.max_steps, 1)  # overheads included: a safe bound
        share = max(self.full_deadline - time.time(), 0.0) / max(n_full, 1)
        steps_per_epoch = math.ceil(self.n_transfer / 32)
        epochs = max(1, min(10, math.floor(share / max(per_step * steps_per_epoch * max(n_trainings, 1), 1e-9))))
        return Fidelity("full", distill_epochs=epochs, recover_epochs=max(1, epochs // 2))

    def full_phase(self) -> None:
        promoted = [e for e in self.promoted() if (e["number"], "full") not in self.done]
        self.say(f"[full] {len(promoted)} candidates promoted")
        for k, entry in enumerate(promoted):
            if time.time() >= self.full_deadline:
                break
            number = entry["number"]
            c = self.candidate(number)
            fidelity = self.full_fidelity(entry, len(promoted) - k)
            full = {"event": "trial", "number": number, "fidelity": "full", "family": entry["family"], "params": entry["params"],
                    "shape": entry["shape"], "steps_described": entry["steps_described"], "predicted": entry["predicted"],
                    "epochs": {"distill": fidelity.distill_epochs, "recover": fidelity.recover_epochs}}
            self.say(f"[full {number}] {fidelity.distill_epochs} epochs: {'; '.join(entry['steps_described'])}")
            try:
                full.update(state="complete",
                            result=self.run_candidate(number, c, fidelity, self.full_deadline + STOP_GRACE_S / 2))
            except TrialTimeout as e:
                full.update(state="timeout", error=str(e))
            except SlimformerError as e:
                full.update(state="failed", error=str(e)[:500])
            self.record(full)
            self.done[(number, "full")] = full
            self.show()
            if full["state"] == "timeout":
                break

    def candidate(self, number: int) -> Candidate:
        """The candidate of trial `number` (rebuilt from its recorded choices after a resume)."""
        if number not in self.candidates:
            from optuna.trial import FixedTrial

            params = self.study.trials[number].params
            self.candidates[number] = suggest(FixedTrial(params), self.teacher_shape, self.sensitivity, self.cfg.families)
        return self.candidates[number]

    # ------------------------------------------------------------------ the end

    def finish(self, interrupted: bool) -> None:
        from compress.search.final import finish

        if not interrupted and time.time() > self.deadline:
            self.ended = "time limit"
        finish(self)


def raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def compress_search(cfg: SearchConfig, console=None) -> Path:
    """Run `slimformer compress`; returns the search folder."""
    return Search(cfg, console).run()
