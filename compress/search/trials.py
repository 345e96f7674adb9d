"""Running a search's trials: each candidate is a recipe run by the ordinary runner in the search folder's `trials/`
run (stage names prefixed by the trial), in this process or in a process of its own that dies with the search; and
what a finished trial's artifact measures (its last stage, its latency with the bench step's timer)."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from compress.errors import SlimformerError
from compress.io import atomic_write_text
from compress.search.space import Candidate

TRIALS_RUN = "trials"  # the run folder of every trial's recipe, inside the search folder


class Trials:
    """Runs trial recipes in the search folder's `trials/` run, in this process or in a process of their own."""

    def __init__(self, search_dir: Path, isolate: bool, say):
        self.dir, self.isolate, self.say = search_dir, isolate, say
        (search_dir / "recipes").mkdir(parents=True, exist_ok=True)
        (search_dir / "logs").mkdir(parents=True, exist_ok=True)

    def run(self, recipe: dict, label: str, deadline: float | None = None) -> dict[str, dict]:
        """Run `recipe`; returns its stages' recorded fields by name (results.json). Raises SlimformerError on failure."""
        from compress.run.config import validate_recipe

        path = self.dir / "recipes" / f"{label}.yaml"
        atomic_write_text(path, yaml.safe_dump(recipe, sort_keys=False))
        validate_recipe(recipe, str(path))  # a malformed candidate is a bug here, not a failed trial
        if self.isolate:
            self.run_process(path, label, deadline)
        else:
            from compress.run.config import load_recipe
            from compress.run.runner import run_recipe

            loaded, _ = load_recipe(path)
            with open(self.dir / "logs" / f"{label}.log", "w") as log, contextlib.redirect_stdout(log):
                run_recipe(loaded, None, self.dir)
        results = json.loads((self.dir / TRIALS_RUN / "results.json").read_text())
        return {s["name"]: s for s in results["stages"]}

    def run_process(self, path: Path, label: str, deadline: float | None) -> None:
        log = self.dir / "logs" / f"{label}.log"
        code = ("import sys; from pathlib import Path; from compress.run.config import load_recipe; "
                "from compress.run.runner import run_recipe; run_recipe(load_recipe(sys.argv[1])[0], None, Path(sys.argv[2]))")
        args = [sys.executable, "-c", code, str(path), str(self.dir)]
        with open(log, "w") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=child_env(), preexec_fn=die_with_parent)
            try:
                timeout = None if deadline is None else max(deadline - time.time(), 1.0)
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise TrialTimeout(f"{label} ran past the phase's deadline and was stopped") from None
            except BaseException:
                proc.kill()
                proc.wait()
                raise
        if code != 0:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            raise SlimformerError(f"{label} failed (exit {code}): {' | '.join(tail)}")


class TrialTimeout(SlimformerError):
    """A trial stopped at its phase's deadline."""


def child_env() -> dict[str, str]:
    """This process's environment with the repository first on PYTHONPATH: a child imports the same code."""
    return {**os.environ,
            "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")])}


def die_with_parent() -> None:
    """In the child, before exec: be killed when the search process dies (Linux), so a killed search leaves no trial running."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


# --------------------------------------------------------------------------- one candidate


def stage_prefix(number: int, fidelity: str) -> str:
    return f"t{number:03d}{fidelity[0]}."


def final_stage(stages: dict[str, dict], prefix: str) -> dict | None:
    """The candidate's last stage with an ONNX artifact."""
    own = [s for name, s in stages.items() if name.startswith(prefix) and s.get("onnx_dir")]
    return own[-1] if own else None


def time_artifact(onnx_dir: Path, batch: int, seq_len: int, threads: int, vocab_size: int, repeats: int = 20) -> float:
    """p50 ms of the artifact at (batch, seq_len) with the bench step's timer."""
    from eval.interleave import interleaved_latency

    timed = interleaved_latency({"x": (onnx_dir / "model.onnx", "")}, [batch], [seq_len], threads, vocab_size,
                                warmup=3, repeats=repeats)
    return float(timed["x"][0]["p50_ms"])



def public(params: dict) -> dict:
    return {k: v for k, v in params.items() if not k.startswith("_")}


def shape_dict(c: Candidate) -> dict | None:
    if c.shape is None:
        return {"family": c.family, "dim": c.params.get("student_dim")}
    s = c.shape
    return {"n_layers": s.n_layers, "dim": s.dim, "n_heads": list(s.n_heads), "head_dim": s.head_dim, "ffn_dim": list(s.ffn_dim),
            "vocab_size": s.vocab_size, "int8": s.int8, "int8_groups": list(s.int8_groups), "layers": c.layers}


def student_bytes(c: Candidate, teacher_config) -> int:
    """fp32 bytes of a specialised student's weights (its ONNX file is that plus a small graph)."""
    from compress.models import SlimRNNConfig, SlimRNNForSequenceClassification

    dim = c.params["student_dim"]
    config = SlimRNNConfig(vocab_size=teacher_config.vocab_size, max_len=teacher_config.max_len, cell=c.family, dim=dim,
                           hidden_dim=dim, n_layers=1, bidirectional=True, num_labels=teacher_config.num_labels)
    return 4 * sum(p.numel() for p in SlimRNNForSequenceClassification(config).parameters())
