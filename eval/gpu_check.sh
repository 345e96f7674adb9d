#!/usr/bin/env bash
# eval/gpu_check.sh: prove the GPU path in one short run (budget: under 8 minutes on one CUDA GPU).
#
#     eval/gpu_wheels.sh             # here, with network: the wheels the GPU machine lacks, into .whl/
#     eval/gpu_check.sh              # there, from the checkout's root: installs .whl/, runs the parts below
#     eval/gpu_check.sh --smoke      # anywhere: the non-CUDA parts, tiny, on CPU (CI runs this)
#     eval/gpu_check.sh --out DIR    # where logs, runs and summary.md go (default runs/gpu_check)
#
# Parts, each logged to DIR/<part>.log with its exit status and seconds in DIR/status.tsv:
#   wheels   pip install --no-index --find-links .whl (only packages not already installed)
#   cuda     python -m pytest -m cuda: the tests that need a GPU (they skip without one)
#   recipe   a shrunk base_gpu (recipes/base_gpu.yaml with overrides): train on CUDA, export (+ fp16
#            artifact), evaluate, bench; the bench step adds torch fp32/fp16/bf16 CUDA columns
#   scaling  slimformer bench --scaling, torch on the GPU up to 16384 tokens
#   summary  python -m eval.gpu_summary DIR: prints DIR/summary.md
# The machine needs only a CUDA torch, transformers, onnx, onnxruntime (CPU), accelerate and pytest;
# the rest comes from .whl/. Extra recipe overrides: GPU_CHECK_OVERRIDES="steps.0.epochs=2 ...".
# Without CUDA (and without --smoke) it stops with exit 2: the parts would not prove anything.
set -uo pipefail  # not -e: every part runs and reports, and the summary is always written
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python}
SMOKE=0
OUT=runs/gpu_check
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --out) OUT=$2; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1 (use --smoke, --out DIR)" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
STATUS="$OUT/status.tsv"
: > "$STATUS"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# part NAME COMMAND...: run it, log it, record "name<TAB>status<TAB>seconds" ("skipped" when told so)
part() {
  local name=$1; shift
  local start=$SECONDS
  echo "== $name: $*"
  "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" >> "$STATUS"
  tail -n 3 "$OUT/$name.log" | sed 's/^/   /'
  return 0
}
skip() {  # skip NAME REASON
  printf '%s\tskipped\t0\t%s\n' "$1" "$2" >> "$STATUS"
  echo "== $1: skipped ($2)"
}

if [ -f .whl/requirements.txt ] && [ "$SMOKE" = 0 ]; then
  # by name: whatever is installed stays, the missing packages (and their missing dependencies) come from .whl/
  part wheels "$PY" -m pip install --no-index --find-links .whl \
    pydantic pyyaml rich matplotlib numpy pyarrow datasets onnxscript scikit-learn torch-pruning jsonschema hypothesis
elif [ "$SMOKE" = 0 ]; then
  skip wheels "no .whl/: run eval/gpu_wheels.sh on a machine with network first, or install the packages"
else
  skip wheels "--smoke uses this environment"
fi

HAS_CUDA=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
if [ "$HAS_CUDA" != 1 ] && [ "$SMOKE" = 0 ]; then
  echo "gpu_check.sh: torch sees no CUDA device; run on a GPU machine, or use --smoke for the CPU parts" >&2
  exit 2
fi

if [ "$HAS_CUDA" = 1 ]; then
  part cuda "$PY" -m pytest -m cuda -q -p no:cacheprovider tests
else
  skip cuda "no CUDA device"
fi

if [ "$SMOKE" = 1 ]; then  # the teacher's steps only, tiny, on CPU: export with fp16, evaluate, bench
  RECIPE_OVERRIDES=(device=cpu task.max_examples=300 task.seq_len=24 task.tokenizer.vocab_size=300
    teacher.size=tiny teacher.dim=32 teacher.n_heads=2 teacher.ffn_dim=64 teacher.n_layers=2
    "steps=[{kind: train, max_steps: 3, batch_size: 16}, {kind: export, fp16: true}, {kind: evaluate}, {kind: bench}]"
    "bench.batch_sizes=[1,2]" bench.seq_lens=null bench.repeats=3 bench.warmup=1 bench.memory=false bench.interleave=false)
  SCALING=(--kinds full --lengths 16 32 --gpu-lengths 16 32 --repeats 1 --warmup 0 --no-memory)
else  # base width (768, 12 heads) at 4 layers, 8000 glosses, one epoch per training step
  THREADS=$("$PY" -c "import os; print(min(8, len(os.sched_getaffinity(0))))")
  RECIPE_OVERRIDES=(task.max_examples=8000 teacher.n_layers=4 steps.0.epochs=1 steps.1.fp16=true
    steps.4.epochs=1 steps.4.student.n_layers=2 steps.8.recover.max_steps=20 steps.9.recover.max_steps=20
    "bench.batch_sizes=[8,32]" bench.repeats=10 bench.warmup=2 bench.memory=false bench.interleave=false "bench.threads=$THREADS")
  SCALING=(--lengths 512 1024 2048 --gpu-lengths 512 1024 2048 4096 8192 16384 --repeats 3 --warmup 1 --no-memory --threads "$THREADS")
fi
# shellcheck disable=SC2206  # user overrides split on spaces on purpose
RECIPE_OVERRIDES+=(${GPU_CHECK_OVERRIDES:-})
part recipe "$PY" cli.py run base_gpu "${RECIPE_OVERRIDES[@]}" --runs-dir "$OUT/runs"
part scaling "$PY" cli.py bench --scaling "${SCALING[@]}" --out "$OUT/scaling"
"$PY" -m eval.gpu_summary "$OUT"
