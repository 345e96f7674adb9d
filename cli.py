"""slimformer's command line: run, validate, ls, cp, schema, report, bench, predict, serve.

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
    from compress.distributed import is_main_process, join
    from compress.run.config import load_recipe
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

    from compress.data import TASKS
    from compress.models import ATTENTION
    from compress.run.config import RECIPES_DIR
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
    from compress.errors import RecipeError
    from compress.run.config import resolve_recipe_path

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
    print(f"check: {len(checks) - len(failed)} of {len(checks)} passed" + (f", {len(failed)} failed" if failed else ""),
          file=sys.stderr)
    return EXIT_CHECK_FAILED if failed else 0


def cmd_bench(args) -> int:
    """`bench --scaling`: latency and peak memory against sequence length for every attention kind."""
    from pydantic import ValidationError

    from compress.errors import SlimformerError

    if not args.scaling:
        return bench_run(args)
    fields = {"lengths": args.lengths, "gpu_lengths": args.gpu_lengths, "kinds": args.kinds, "threads": args.threads,
              "repeats": args.repeats, "warmup": args.warmup}
    from compress.onnx.scaling import build_model, check_kinds, export_model
    from eval.report import load_results, write_report
    from eval.scaling import ScalingConfig, run_scaling

    try:
        cfg = ScalingConfig(**{k: v for k, v in fields.items() if v is not None}, memory=not args.no_memory)
    except ValidationError as e:
        raise SlimformerError("bench --scaling: " + "; ".join(f"--{'.'.join(map(str, err['loc']))}: {err['msg']}"
                                                             for err in e.errors())) from None
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

    from compress.errors import SlimformerError
    from compress.models import register_auto_classes

    register_auto_classes()
    try:
        return AutoModelForSequenceClassification.from_pretrained(folder).eval()
    except Exception as e:  # a damaged stage folder: transformers and safetensors raise many kinds
        raise SlimformerError(f"{folder} does not load ({type(e).__name__}: {str(e)[:200]}); it was edited or cut short: "
                              f"re-run the recipe (`slimformer run {folder.parents[2] / 'recipe.yaml'}`) "
                              "to make it again") from None


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


def cmd_embed(args) -> int:
    """`slimformer embed ONNX_DIR --input FILE --output FILE.npy|.jsonl`: sentence embeddings of a file of texts."""
    from compress.serve.embed import embed_file

    n = embed_file(args.onnx_dir, args.input, args.output, args.text_column, args.batch_size, args.threads)
    print(f"wrote {n} embeddings to {args.output}")
    return 0


def cmd_predict(args) -> int:
    """Classify texts with an exported ONNX folder (`compress/serve`): ONNX Runtime, the saved tokenizer, config.json.

    Texts on the command line are printed as JSON lines; `--input FILE --output FILE` streams a
    file of texts in length-sorted chunks (memory bounded) and writes one prediction per row, in
    order, with a progress bar, then prints texts per second (model loading not counted)."""
    import time

    from compress.errors import SlimformerError
    from compress.serve import load_artifact, prediction
    from compress.serve.files import check_paths, predict_file

    if args.batch_size < 1 or args.threads < 1:
        raise SlimformerError(f"--batch-size and --threads must be at least 1, got {args.batch_size} and {args.threads}")
    if args.input is None:
        if not args.texts:
            raise SlimformerError("give texts to classify (slimformer predict ONNX_DIR \"a text\" ...) "
                                  "or --input FILE --output FILE")
        artifact = load_artifact(args.onnx_dir, args.threads)
        probs = artifact.probabilities([t[: artifact.max_text_chars] for t in args.texts], args.batch_size)
        for text, row in zip(args.texts, probs, strict=True):
            print(json.dumps({"text": text, **prediction(row, artifact.labels, args.probabilities)}, ensure_ascii=False))
        return 0
    if args.texts:
        raise SlimformerError("give texts on the command line or --input FILE, not both")
    if args.output is None:
        raise SlimformerError("--input needs --output FILE (.jsonl or .csv): where the predictions go")
    check_paths(Path(args.input), Path(args.output))  # before loading the model: a wrong path fails at once
    artifact = load_artifact(args.onnx_dir, args.threads)
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console()) as bar:
        task = bar.add_task("predict", total=1.0)
        start = time.perf_counter()
        n = predict_file(artifact, args.input, args.output, args.text_column, args.batch_size, args.probabilities,
                         progress=lambda done, read: bar.update(task, completed=read, description=f"{done:,} texts"))
        seconds = time.perf_counter() - start
    print(f"{n:,} texts in {seconds:.2f} s: {n / max(seconds, 1e-9):,.0f} texts/s -> {args.output}")
    return 0


def cmd_serve(args) -> int:
    """`slimformer serve ONNX_DIR`: POST /predict and GET /health, texts of concurrent requests batched together."""
    from pydantic import ValidationError

    from compress.errors import SlimformerError
    from compress.serve import load_artifact
    from compress.serve.server import ServeConfig, bound_url, create_app, make_server

    names = ("host", "port", "max_batch_size", "max_wait_ms", "max_texts", "max_body_bytes", "threads", "shutdown_timeout_s")
    try:
        cfg = ServeConfig(**{k: getattr(args, k) for k in names if getattr(args, k) is not None})
    except ValidationError as e:
        flags = [f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']}" for err in e.errors()]
        raise SlimformerError("serve: " + "; ".join(flags)) from None
    artifact = load_artifact(args.onnx_dir, cfg.threads)
    server, sock = make_server(create_app(artifact, cfg), cfg)
    print(f"serving {args.onnx_dir} at {bound_url(sock)} (POST /predict, GET /health); Ctrl-C stops", flush=True)
    import signal

    # uvicorn shuts down gracefully on SIGINT and SIGTERM, then raises the signal again under the handler it found:
    # SIGTERM's is made Ctrl-C's, so both end here with exit code 0 once every request in flight is answered
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    print("stopped", file=sys.stderr)
    return 0


def cmd_compress(args) -> int:
    """`slimformer compress MODEL_OR_RECIPE --max-drop ... --minimize ...`: search the compression for a budget
    (compress/search)."""
    from compress.search.config import SearchConfig, parse_time
    from compress.search.front import Budget, parse_drop
    from compress.search.runner import compress_search

    max_drop, relative = parse_drop(args.max_drop)
    budget = Budget(max_drop, relative, args.minimize, args.max_latency_ms, args.max_mb)
    teacher = Path(args.teacher)
    if not teacher.exists():
        from compress.run.config import resolve_recipe_path

        teacher = resolve_recipe_path(args.teacher)  # a shipped recipe's short name (quickstart)
    path = lambda value: Path(value) if value else None  # noqa: E731
    cfg = SearchConfig(
        teacher=teacher, budget=budget, batch_size=args.batch_size, seq_len=args.seq_len, time_s=parse_time(args.time),
        train=path(args.train), validation=path(args.validation), test=path(args.test),
        unlabeled=[Path(u) for u in args.unlabeled], text_column=args.text_column, label_column=args.label_column,
        name=args.name, runs_dir=Path(args.runs_dir), seed=args.seed, threads=args.threads,
        families=tuple(args.families), isolate=not args.in_process, latency_fit=args.latency_fit,
        latency_holdout=args.latency_holdout, max_trials=args.max_trials, latency_model=path(args.latency_model),
        full_epochs=args.full_epochs,
        command="slimformer " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
    )
    search_dir = compress_search(cfg, console())
    print(f"search folder: {search_dir}")
    print(f"best recipe: {search_dir / 'best.yaml'}")
    if (search_dir / "report.html").is_file():
        print(f"report: {search_dir / 'report.html'}")
    return 0


def console(quiet: bool = False):
    from rich.console import Console

    return Console(stderr=True, quiet=quiet)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slimformer", description="Make Transformer text classifiers small and fast: "
                                     "train a teacher, compress it, export ONNX, benchmark, report.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run a recipe (a path or a shipped recipe's name) with key=value overrides")
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", help="e.g. steps.teacher.epochs=1 task.max_examples=2000")
    p.add_argument("--runs-dir", default=os.environ.get("SLIMFORMER_RUNS", "runs"),
                   help="where runs/<name>/ goes (default: ./runs)")
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

    p = sub.add_parser("bench", help="re-time a run's stages in interleaved rounds; "
                                     "or --scaling: latency and memory against length per attention kind")
    p.add_argument("run_dir", nargs="?", help="a finished run folder: every stage re-timed in interleaved rounds, "
                                              "results.json and report rewritten")
    p.add_argument("--scaling", action="store_true", help="run the attention scaling benchmark")
    p.add_argument("--lengths", type=int, nargs="+", help="sequence lengths (default 512 1024 2048 4096 8192)")
    p.add_argument("--kinds", nargs="+", help="attention kinds (default: full bigbird linformer performer)")
    p.add_argument("--gpu-lengths", type=int, nargs="+",
                   help="lengths timed in torch on a GPU, until a kind runs out of memory (default 512 ... 16384)")
    p.add_argument("--threads", type=int, help="intra-op threads (default 2)")
    p.add_argument("--repeats", type=int,
                   help="timed calls per length (default 5); with a run folder: rounds (default: the run's repeats)")
    p.add_argument("--warmup", type=int, help="untimed calls per length (default 1)")
    p.add_argument("--no-memory", action="store_true", help="skip the fresh-process peak-memory probes")
    p.add_argument("--out", default="runs/scaling",
                   help="output folder (default runs/scaling); a run folder gets the plots in its report")
    p.set_defaults(fn=cmd_bench)

    p = sub.add_parser("compress", help="search the compression pipeline that meets a budget (accuracy, latency, size); "
                                         "keeps the Pareto front and writes best.yaml")
    p.add_argument("teacher", help="a fine-tuned model folder (kept as it is), or a recipe whose steps make the teacher")
    p.add_argument("--train", help="training file (.csv .tsv .jsonl .parquet); with a model folder")
    p.add_argument("--validation", help="validation file: the search chooses on it")
    p.add_argument("--test", help="test file: read only at the end, for the final front")
    p.add_argument("--unlabeled", nargs="*", default=[], help="unlabelled texts for the transfer set (.txt or a text column)")
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label")
    p.add_argument("--max-drop", help="accuracy the compressed model may lose: points (1.0) or percent of the teacher's (1%%)")
    p.add_argument("--minimize", choices=["latency", "size"], help="the cost to minimise under the accuracy constraint")
    p.add_argument("--max-latency-ms", type=float,
                   help="hard latency budget (ms at --batch-size x --seq-len); accuracy maximised")
    p.add_argument("--max-mb", type=float, help="hard size budget (MB of the ONNX file); accuracy maximised")
    p.add_argument("--batch-size", type=int, default=8, help="the batch size latency is measured at (default 8)")
    p.add_argument("--seq-len", type=int, help="input length in tokens (default: the recipe's, else 128)")
    p.add_argument("--time", default="1h", help="time for the whole command: 30m, 2h, 1h30m (default 1h)")
    p.add_argument("--name", help="the search folder's name (default: compress-<recipe name>, compress-<run>-<stage> "
                                  "for a stage folder, else compress-<folder>)")
    p.add_argument("--runs-dir", default=os.environ.get("SLIMFORMER_RUNS", "runs"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads latency is measured with (default 2)")
    p.add_argument("--families", nargs="+", default=["transformer", "boe"],
                   help="student families in the search space: transformer, boe, gru, lstm (default: transformer boe)")
    p.add_argument("--latency-fit", type=int, default=16, help=argparse.SUPPRESS)
    p.add_argument("--latency-holdout", type=int, default=20, help=argparse.SUPPRESS)
    p.add_argument("--max-trials", type=int, help=argparse.SUPPRESS)
    p.add_argument("--full-epochs", type=int, help=argparse.SUPPRESS)
    p.add_argument("--latency-model", help="reuse the latency_model.json of an earlier search on this machine and protocol")
    p.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(fn=cmd_compress)

    p = sub.add_parser("predict", help="classify texts, or a file of them (--input), with an exported ONNX folder")
    p.add_argument("onnx_dir")
    p.add_argument("texts", nargs="*", help="texts to classify (printed as JSON lines); or --input")
    p.add_argument("--input", help="a file of texts: .txt (one per line), .csv, .tsv, .jsonl or .parquet")
    p.add_argument("--text-column", default="text", help="the column (csv, tsv, parquet) or field (jsonl) holding the text")
    p.add_argument("--output", help="where --input's predictions go, one row per input row: .jsonl or .csv")
    p.add_argument("--batch-size", type=int, default=32, help="texts per model call (default 32)")
    p.add_argument("--probabilities", action="store_true", help="also write every class's probability")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="ONNX Runtime intra-op threads (default: all cores)")
    p.set_defaults(fn=cmd_predict)

    p = sub.add_parser("embed", help="sentence embeddings of a file of texts with a sentence-embedding stage's ONNX folder")
    p.add_argument("onnx_dir")
    p.add_argument("--input", required=True, help="a file of texts: .txt (one per line), .csv, .tsv, .jsonl, .json or .parquet")
    p.add_argument("--text-column", default="text", help="the column (csv, tsv, parquet) or field (jsonl) holding the text")
    p.add_argument("--output", required=True, help="where the embeddings go, in input order: .npy (float32 (N, D)) or .jsonl")
    p.add_argument("--batch-size", type=int, default=32, help="texts per model call (default 32)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="ONNX Runtime intra-op threads (default: all cores)")
    p.set_defaults(fn=cmd_embed)

    p = sub.add_parser("serve", help="serve an exported ONNX folder over HTTP: POST /predict, GET /health")
    p.add_argument("onnx_dir")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, help="port (default 8000; 0: any free port, printed)")
    p.add_argument("--max-batch-size", type=int, help="the most texts in one model call (default 32)")
    p.add_argument("--max-wait-ms", type=float, help="how long a batch may wait for requests still arriving (default 5)")
    p.add_argument("--max-texts", type=int, help="texts per request (default 256)")
    p.add_argument("--max-body-bytes", type=int, help="bytes of a request body (default 1 MiB)")
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: all cores)")
    p.add_argument("--shutdown-timeout-s", type=float,
                   help="on Ctrl-C/SIGTERM, how long requests in flight may take (default 30)")
    p.set_defaults(fn=cmd_serve)
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
