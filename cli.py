"""slimformer's command line: run, validate, ls, cp, schema, report, bench, predict.

    slimformer run quickstart                       # a shipped recipe by short name
    slimformer run my.yaml steps.teacher.epochs=1   # a path, with key=value overrides
    slimformer validate my.yaml                     # check a recipe without running it
    slimformer report runs/a runs/b                 # one page comparing runs
    slimformer report runs/a --check t.yaml         # and exit 1 when a stage breaks a threshold (CI)
    slimformer bench runs/a                         # re-time every stage of a run in interleaved rounds
    slimformer bench --scaling                      # attention latency/memory against length

`python cli.py ...` does the same from a checkout. User mistakes print one clear message and
exit with code 2; nothing is written for a recipe that does not validate. `report --check`
exits with code 1 when a stage breaks a threshold.
"""

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

EXIT_USER_ERROR = 2
EXIT_CHECK_FAILED = 1  # `report --check`: a stage broke a limit (CI fails); 2 stays for bad input


def cmd_run(args) -> int:
    from compress.run.config import load_recipe
    from compress.distributed import is_main_process, join
    from compress.run.runner import resolve_device, run_recipe
    from eval.report import write_report

    recipe, path = load_recipe(args.recipe, args.overrides)
    command = "slimformer " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    join(cpu=resolve_device(recipe.device) == "cpu")  # under `accelerate launch`: gloo between CPU processes, NCCL between GPUs
    main = is_main_process()  # the others train alongside it and write nothing
    run_dir = run_recipe(recipe, path, Path(args.runs_dir), command=command, console=console(quiet=not main))
    if not main:
        return 0
    paths = write_report([run_dir], baseline=recipe.report.baseline)
    console().print(f"run folder: {run_dir}")
    print(f"report: {paths['html']}")
    print(f"report (markdown): {paths['md']}")
    return 0


def cmd_validate(args) -> int:
    from compress.run.config import dump_recipe, load_recipe

    from compress.run.preflight import preflight

    recipe, path = load_recipe(args.recipe, args.overrides)
    if args.print:
        print(dump_recipe(recipe, path.parent))
    # every check `run` makes before it writes anything, by the same code (--no-data: not the data files)
    checked = preflight(recipe, path.parent, data=not args.no_data)
    detail = f"; teacher: {checked.teacher.describe()}"
    if checked.data is not None:
        data = checked.data
        sizes = "/".join(str(len(data.labels[s])) for s in ("train", "validation", "test"))
        detail += f"; data: {sizes} train/validation/test examples, {data.n_classes} classes"
        from compress.data import data_notes

        detail += "".join(f"; {line}" for line in data_notes(data.stats))
    variants = "".join(f"; variant {v}: {', '.join(s.kind for s in steps)}" for v, steps in (recipe.variants or {}).items())
    print(f"{path}: ok ({len(recipe.steps)} steps: {', '.join(s.kind for s in recipe.steps)}{variants}{detail})")
    return 0


def cmd_ls(args) -> int:
    from rich.table import Table

    from compress.run.config import RECIPES_DIR
    from compress.data import TASKS
    from compress.models import ATTENTION
    from compress.steps import STEPS

    table = Table(title="shipped recipes (slimformer run NAME)")
    table.add_column("name")
    table.add_column("purpose")
    for path in sorted(RECIPES_DIR.glob("*.yaml")):
        first = path.read_text(encoding="utf-8").splitlines()[:1]
        table.add_row(path.stem, first[0].lstrip("# ").strip() if first else "")
    console().print(table)
    steps = Table(title="step kinds")
    steps.add_column("kind")
    steps.add_column("what it does")
    for kind, spec in STEPS.items():
        steps.add_row(kind, (spec.config.__doc__ or "").strip().splitlines()[0])
    console().print(steps)
    console().print(f"task kinds: {', '.join(TASKS)}")
    console().print(f"attention kinds: {', '.join(ATTENTION)}")
    return 0


def cmd_cp(args) -> int:
    from compress.run.config import resolve_recipe_path
    from compress.errors import RecipeError

    source = resolve_recipe_path(args.recipe)
    dest = Path(args.dest)
    if dest.is_dir():
        dest = dest / source.name
    if dest.exists() and not args.force:
        raise RecipeError(f"{dest} exists; pass --force to overwrite it")
    dest.write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
    print(f"copied {source.name} to {dest}")
    return 0


def cmd_schema(args) -> int:
    from compress.run.config import recipe_schema

    text = json.dumps(recipe_schema(), indent=2)
    if args.output:
        Path(args.output).write_text(text + "\n", encoding="utf-8")
        print(f"wrote {args.output}")
    else:
        print(text)
    return 0


def cmd_report(args) -> int:
    """Write the report; with --check, exit 1 when a stage breaks a limit of the thresholds file."""
    from eval.report import write_report

    run_dirs = [Path(d) for d in args.run_dirs]
    checks = None
    if args.check:  # a bad thresholds file or a missing measurement fails (exit 2) before anything is written
        from eval.check import load_thresholds, run_checks

        checks = run_checks(run_dirs, load_thresholds(args.check), baseline=args.baseline, source=args.check)
    paths = write_report(run_dirs, out_dir=Path(args.out) if args.out else None, baseline=args.baseline)
    print(f"report: {paths['html']}")
    print(f"report (markdown): {paths['md']}")
    if checks is None:
        return 0
    from eval.check import check_table

    console().print(check_table(checks))
    failed = [c for c in checks if not c.passed]
    for c in failed:
        print(f"FAIL {c.describe()} (stages.{c.selector})", file=sys.stderr)
    print(f"check: {len(checks) - len(failed)} of {len(checks)} passed" + (f", {len(failed)} failed" if failed else ""), file=sys.stderr)
    return EXIT_CHECK_FAILED if failed else 0


def cmd_bench(args) -> int:
    """`bench --scaling`: latency and peak memory against sequence length for every attention kind."""
    from pydantic import ValidationError

    from compress.errors import SlimformerError

    if not args.scaling:
        return bench_run(args)
    fields = {"lengths": args.lengths, "gpu_lengths": args.gpu_lengths, "kinds": args.kinds, "threads": args.threads, "repeats": args.repeats, "warmup": args.warmup}
    from compress.onnx.scaling import build_model, check_kinds, export_model
    from eval.report import load_results, write_report
    from eval.scaling import ScalingConfig, run_scaling

    try:
        cfg = ScalingConfig(**{k: v for k, v in fields.items() if v is not None}, memory=not args.no_memory)
    except ValidationError as e:
        raise SlimformerError("bench --scaling: " + "; ".join(f"--{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())) from None
    check_kinds(cfg.kinds)
    out = Path(args.out)
    # a run folder: its trained models join the plots, and its report gets them (read first: a bad file fails early)
    results = load_results(out) if (out / "results.json").is_file() else None
    command = "slimformer " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    run_scaling(cfg, out, build_model, export_model, command=command, say=console().print, results=results)
    if results is not None:
        write_report([out])
    print(f"scaling: {out / 'scaling.md'}")
    return 0


def load_saved_model(folder: Path):
    """A stage's saved torch model (`stages/<name>/model`), for re-timing eager torch beside ONNX Runtime."""
    from transformers import AutoModelForSequenceClassification

    from compress.models import register_auto_classes

    register_auto_classes()
    return AutoModelForSequenceClassification.from_pretrained(folder).eval()


def bench_run(args) -> int:
    """`bench runs/<name>`: time every stage of a finished run again, in interleaved rounds, and re-render its report."""
    from compress.errors import SlimformerError
    from eval.interleave import retime_run
    from eval.peak import record_peak
    from eval.report import write_report

    if not args.run_dir:
        raise SlimformerError("bench needs a run folder (slimformer bench runs/<name>) or --scaling")
    run_dir = Path(args.run_dir)
    timed = retime_run(run_dir, repeats=args.repeats, load_torch=load_saved_model)
    if not timed["fixed"] and not timed["traffic"]:
        raise SlimformerError(f"{run_dir}: one benchmarked ONNX artifact and no saved torch model beside it; nothing to compare")
    peak = record_peak(run_dir)  # the roofline's ceiling, at the run's threads, on this machine now
    write_report([run_dir])
    rates = ", ".join(f"{p} {peak[p]['flops_per_s'] / 1e9:.1f} G/s" for p in ("fp32", "int8"))
    served = f"; served real test texts again: {', '.join(timed['traffic'])}" if timed["traffic"] else ""
    print(f"re-timed {len(timed['fixed'])} stages in interleaved rounds: {', '.join(timed['fixed'])}{served}; "
          f"MatMul peak {rates}; report: {run_dir / 'report.html'}")
    return 0


def cmd_predict(args) -> int:
    """Classify texts with an exported ONNX folder: ONNX Runtime, the saved tokenizer and config.json only.

    The config is read as JSON (labels and the longest input), so no model code is loaded and
    nothing asks for `trust_remote_code`."""
    import numpy as np
    import onnxruntime as ort
    from transformers import AutoTokenizer

    from compress.errors import SlimformerError

    folder = Path(args.onnx_dir)
    if not (folder / "model.onnx").is_file():
        raise SlimformerError(f"{folder} holds no model.onnx; give a stage's onnx folder, e.g. runs/quickstart/stages/teacher/onnx")
    if not (folder / "config.json").is_file():
        raise SlimformerError(f"{folder} holds no config.json (labels, max_len); export the stage again with `slimformer run`")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    id2label = {int(k): v for k, v in (config.get("id2label") or {}).items()}
    max_len = config.get("max_len") or config.get("max_position_embeddings") or 512
    tokenizer = AutoTokenizer.from_pretrained(folder)
    enc = tokenizer(args.texts, padding=True, truncation=True, max_length=max_len, return_tensors="np")
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)})[0]
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    for text, p in zip(args.texts, probs):
        label = id2label.get(int(p.argmax()), str(int(p.argmax())))
        print(json.dumps({"text": text, "label": label, "score": round(float(p.max()), 4)}))
    return 0


def console(quiet: bool = False):
    from rich.console import Console

    return Console(stderr=True, quiet=quiet)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slimformer", description="Make Transformer text classifiers small and fast: train a teacher, compress it, export ONNX, benchmark, report.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run a recipe (a path or a shipped recipe's name) with key=value overrides")
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", help="e.g. steps.teacher.epochs=1 task.max_examples=2000")
    p.add_argument("--runs-dir", default=os.environ.get("SLIMFORMER_RUNS", "runs"), help="where runs/<name>/ goes (default: ./runs)")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("validate", help="check a recipe without running it")
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--print", action="store_true", help="print the resolved recipe")
    p.add_argument("--no-data", action="store_true", help="skip loading the task's data (files, columns, labels)")
    p.set_defaults(fn=cmd_validate)

    p = sub.add_parser("ls", help="list shipped recipes, step kinds, task kinds and attention kinds")
    p.set_defaults(fn=cmd_ls)

    p = sub.add_parser("cp", help="copy a shipped recipe to edit it")
    p.add_argument("recipe")
    p.add_argument("dest")
    p.add_argument("--force", action="store_true")
    p.set_defaults(fn=cmd_cp)

    p = sub.add_parser("schema", help="print the recipe JSON Schema (for editors)")
    p.add_argument("-o", "--output")
    p.set_defaults(fn=cmd_schema)

    p = sub.add_parser("report", help="write the report of one run, or one page comparing several")
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--baseline", help="reference stage (run/stage when comparing runs)")
    p.add_argument("--out", help="folder for a comparison report (default runs/compare-<names>)")
    p.add_argument("--check", metavar="THRESHOLDS", help="YAML of accuracy floors and latency/size ceilings per stage: "
                   "exit 1 when one is broken (docs/thresholds.example.yaml)")
    p.set_defaults(fn=cmd_report)

    p = sub.add_parser("bench", help="re-time a run's stages in interleaved rounds; or --scaling: latency and memory against length per attention kind")
    p.add_argument("run_dir", nargs="?", help="a finished run folder: every stage re-timed in interleaved rounds, results.json and report rewritten")
    p.add_argument("--scaling", action="store_true", help="run the attention scaling benchmark")
    p.add_argument("--lengths", type=int, nargs="+", help="sequence lengths (default 512 1024 2048 4096 8192)")
    p.add_argument("--kinds", nargs="+", help="attention kinds (default: full bigbird linformer performer)")
    p.add_argument("--gpu-lengths", type=int, nargs="+", help="lengths timed in torch on a GPU, until a kind runs out of memory (default 512 ... 16384)")
    p.add_argument("--threads", type=int, help="intra-op threads (default 2)")
    p.add_argument("--repeats", type=int, help="timed calls per length (default 5); with a run folder: rounds (default: the run's repeats)")
    p.add_argument("--warmup", type=int, help="untimed calls per length (default 1)")
    p.add_argument("--no-memory", action="store_true", help="skip the fresh-process peak-memory probes")
    p.add_argument("--out", default="runs/scaling", help="output folder (default runs/scaling); a run folder gets the plots in its report")
    p.set_defaults(fn=cmd_bench)

    p = sub.add_parser("predict", help="classify texts with an exported ONNX folder")
    p.add_argument("onnx_dir")
    p.add_argument("texts", nargs="+")
    p.set_defaults(fn=cmd_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # overrides may also follow options: `run quickstart --runs-dir x steps.teacher.epochs=1`
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from transformers.utils import logging as hf_logging

    from compress.errors import SlimformerError

    hf_logging.disable_progress_bar()  # every command: transformers' bars ("Loading weights") would interleave with ours
    try:
        return args.fn(args)
    except SlimformerError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted: finished steps are kept; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
