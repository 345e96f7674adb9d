#!/usr/bin/env bash
# eval/gpu_wheels.sh: download the wheels eval/gpu_check.sh installs on a GPU machine that has only
# a CUDA torch, transformers, onnx, onnxruntime (CPU), accelerate and pytest (and no network).
#
# Run it here, in a checkout with slimformer's dependencies installed (pip install -e '.[test]'):
#     eval/gpu_wheels.sh                                   # wheels for this Python and platform
#     eval/gpu_wheels.sh --python-version 3.12 --platform manylinux2014_x86_64   # for another Python
# It writes .whl/ (git-ignored): one wheel per package the GPU machine lacks, pinned to the versions
# installed here (the versions the tests pass with), and .whl/requirements.txt listing them.
# Extra arguments go to `pip download`. Copy .whl/ with the checkout; gpu_check.sh installs from it
# with `pip install --no-index --find-links .whl -r .whl/requirements.txt`.
#
# Which packages: the dependency closure of pyproject.toml's dependencies and test extras, minus what the
# GPU machine's packages surely bring, both read from the metadata installed here. Installing by name
# (gpu_check.sh does) keeps every package already there and takes only the missing ones from .whl/.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python}
mkdir -p .whl
"$PY" - > .whl/requirements.txt <<'EOF'
import tomllib
from importlib.metadata import PackageNotFoundError, distribution

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def closure(requirements: list[str]) -> dict[str, str]:
    """name -> installed version of every package `requirements` pull in (markers evaluated here)."""
    found, stack = {}, [Requirement(r) for r in requirements]
    while stack:
        req = stack.pop()
        name = canonicalize_name(req.name)
        if name in found:
            continue
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue  # an optional dependency not installed here: not needed
        found[name] = dist.version
        for text in dist.requires or []:
            sub = Requirement(text)
            extras = [{"extra": e} for e in req.extras] or [{"extra": ""}]
            if sub.marker is None or any(sub.marker.evaluate(env) for env in extras):
                stack.append(sub)
    return found


def direct(name: str) -> set[str]:
    """`name` and what it requires unconditionally: installed wherever `name` works."""
    reqs = [Requirement(r) for r in distribution(name).requires or []]
    return {canonicalize_name(name)} | {canonicalize_name(r.name) for r in reqs if r.marker is None}


project = tomllib.load(open("pyproject.toml", "rb"))["project"]
wanted = closure(project["dependencies"] + project["optional-dependencies"]["test"])
# torch, onnx, onnxruntime and pytest with everything they pull in; transformers and accelerate with their
# direct requirements only (their versions there may differ: transformers here pulls pydantic in through
# typer, one there need not), so what might be missing is carried
present = set(closure(["torch", "onnx", "onnxruntime", "pytest"])).union(*(direct(n) for n in ("transformers", "accelerate")))
for name, version in sorted(wanted.items()):
    if name not in present:
        print(f"{name}=={version}")
EOF
echo "$(wc -l < .whl/requirements.txt) packages the GPU machine lacks: $(tr '\n' ' ' < .whl/requirements.txt)"
"$PY" -m pip download --no-deps --only-binary=:all: -d .whl -r .whl/requirements.txt "$@"
du -sh .whl
