"""The search space of `slimformer compress`: what a candidate is, how it is drawn, and the recipe steps that build it.

A candidate is a pipeline of the existing steps applied to the teacher: `distill` to fewer layers,
`prune_width`, `prune_heads`, `prune_ffn`, `prune_vocab`, `quantize`; or a specialised student
(`distill` into a bag-of-embeddings, GRU or LSTM model), which is often the best compression of a
Transformer when the task allows. The sampler (optuna) decides *how many*: the depth, the width,
the fractions of heads and neurons kept, whether the vocabulary is pruned, the int8 mode and how
many module groups are quantized, the learning rate. The sensitivity measured on the teacher
(`compress/search/sensitivity.py`) decides *which*: the layers kept are those whose removal costs
most, heads and neurons are cut more in the layers where cutting costs least, and the module
groups quantized are the least sensitive ones.

Every default is a rule, not a number tuned on one data set: widths and counts are fractions of the
teacher's, depths run from 1 to the teacher's, learning rates span the range the distillation
literature uses (1e-5 to 1e-3 for students initialised from the teacher, as TinyBERT and MiniLM
fine-tune; 1e-4 to 1e-2 for fresh students, Tang et al. 2019), and how long a candidate trains is
set by the time budget (`Fidelity`, chosen by the search runner).
"""

import math
from dataclasses import dataclass, field

from compress.search.latency import GROUPS, Shape, quantize_globs

WIDTHS = (1.0, 0.75, 0.5, 0.375, 0.25)  # residual width kept, a fraction of the teacher's
KEPT = (1.0, 0.75, 0.5, 0.375, 0.25)  # heads / FFN neurons kept, a fraction of the teacher's
STUDENT_WIDTHS = (1.0, 0.5, 0.25)  # a specialised student's embedding width, a fraction of the teacher's
FAMILIES = ("transformer", "boe", "gru", "lstm")
# searched unless --families says otherwise: the recurrent students measured no faster than a pruned one-layer
# Transformer in ONNX Runtime (0.57-3.7 ms against 0.72 ms at batch 8 x 48, quickstart search of 2026-12-07) and far
# weaker after a cheap estimate (14-38% against 50-76%), so by default they would spend a short budget's random start
DEFAULT_FAMILIES = ("transformer", "boe")
INT8 = ("none", "dynamic", "static")
BATCH_SIZE = 32  # examples per optimiser step: the common fine-tuning batch (BERT, TinyBERT task distillation)


def round8(x: float) -> int:
    """A width the matrix kernels like: a positive multiple of 8."""
    return max(8, int(round(x / 8)) * 8)


@dataclass(frozen=True)
class TeacherShape:
    n_layers: int
    dim: int
    n_heads: tuple[int, ...]
    head_dim: int
    ffn_dim: tuple[int, ...]
    vocab_size: int
    pruned_vocab_size: int  # rows prune_vocab would keep (the tokens of the training and validation texts and transfer files)

    @classmethod
    def of(cls, config, pruned_vocab_size: int) -> "TeacherShape":
        return cls(config.n_layers, config.dim, tuple(config.n_heads), config.head_dim, tuple(config.ffn_dim),
                   config.vocab_size, pruned_vocab_size)


@dataclass(frozen=True)
class Fidelity:
    """How long a candidate trains: the cheap estimate (every training capped at `max_steps`) or the full recovery."""

    name: str  # "cheap" | "full"
    distill_epochs: int = 1
    recover_epochs: int = 1
    max_steps: int | None = None  # caps every training of the candidate (the cheap estimate)


@dataclass
class Candidate:
    """One point of the space: what the sampler chose, the shape it leads to, and the steps that build it."""

    family: str  # transformer | boe | gru | lstm
    params: dict  # the sampler's choices, as optuna recorded them
    shape: Shape | None = None  # the final Transformer's shape (None: a specialised student)
    layers: list[int] = field(default_factory=list)  # teacher layers the student keeps (distill's layer_map)
    heads_per_layer: list[float] | None = None  # prune_heads' per_layer fractions removed
    ffn_per_layer: list[float] | None = None  # prune_ffn's per_layer fractions removed
    int8_groups: list[str] = field(default_factory=list)  # module groups quantized

    def describe(self) -> list[str]:
        """The candidate's steps in words, for the report."""
        p = self.params
        if self.family != "transformer":
            return [f"distill into a {self.family} student, dim {p['student_dim']}"]
        s, out = self.shape, []
        if p["n_layers"] < len(p["_teacher_heads"]):
            out.append(f"distill {p['n_layers']} layers {self.layers}")
        if s.dim < p["_teacher_dim"]:
            out.append(f"prune_width {p['_teacher_dim']} -> {s.dim}")
        if self.heads_per_layer is not None:
            out.append(f"prune_heads -> {list(s.n_heads)}")
        if self.ffn_per_layer is not None:
            out.append(f"prune_ffn -> {list(s.ffn_dim)}")
        if p["vocab"]:
            out.append(f"prune_vocab -> ~{s.vocab_size} rows")
        if s.int8:
            out.append(f"quantize {s.int8} ({', '.join(self.int8_groups)})")
        return out


# --------------------------------------------------------------------------- sensitivity decides which


def kept_layers(n_layers: int, layer_drops: list[float]) -> list[int]:
    """The `n_layers` teacher layers whose removal costs most validation accuracy, in order (ties: the later layer)."""
    ranked = sorted(range(len(layer_drops)), key=lambda i: (layer_drops[i], i), reverse=True)
    return sorted(ranked[:n_layers])


def allocate(removed: float, units: list[int], drops: list[float], floor: float = 0.1) -> list[float]:
    """Per-layer fractions removed, averaging `removed` over all units, more where removing costs less.

    `units[i]` heads (or neurons) in layer i, `drops[i]` the accuracy points lost by cutting half of them
    (sensitivity). Layer i's share grows as 1 / (floor + drop_i); each layer keeps at least one unit, and
    what a capped layer cannot take is spread over the others (water-filling), so the total stays
    `removed` * sum(units) whenever that leaves every layer a unit."""
    weights = [1.0 / (floor + max(d, 0.0)) for d in drops]
    caps = [(n - 1) / n if n > 0 else 0.0 for n in units]
    target = removed * sum(units)
    fractions = [0.0] * len(units)
    free = [i for i in range(len(units)) if caps[i] > 0]
    while free and target > 1e-9:
        scale = target / sum(weights[i] * units[i] for i in free)
        capped = [i for i in free if weights[i] * scale >= caps[i]]
        if not capped:
            for i in free:
                fractions[i] = weights[i] * scale
            break
        for i in capped:
            fractions[i] = caps[i]
            target -= caps[i] * units[i]
            free.remove(i)
    return [round(f, 6) for f in fractions]


def int8_order(drops: dict[str, float]) -> list[str]:
    """Module groups from the least to the most sensitive to int8 (ties: GROUPS' order)."""
    return sorted(GROUPS, key=lambda g: (drops.get(g, 0.0), list(GROUPS).index(g)))


# --------------------------------------------------------------------------- drawing a candidate


def suggest(trial, teacher: TeacherShape, sensitivity: dict, families: tuple[str, ...] = FAMILIES) -> Candidate:
    """Draw a candidate with optuna's define-by-run `trial` (its choices are recorded on the trial)."""
    family = trial.suggest_categorical("family", list(families)) if len(families) > 1 else families[0]
    if family != "transformer":
        width = trial.suggest_categorical("student_width", list(STUDENT_WIDTHS))
        lr = trial.suggest_float("student_lr", 1e-4, 1e-2, log=True)
        params = {"family": family, "student_dim": round8(width * teacher.dim), "lr": lr, "vocab": False}
        return Candidate(family, params)
    n_layers = trial.suggest_int("n_layers", 1, teacher.n_layers)
    width = trial.suggest_categorical("width", list(WIDTHS))
    heads_kept = trial.suggest_categorical("heads_kept", list(KEPT))
    ffn_kept = trial.suggest_categorical("ffn_kept", list(KEPT))
    vocab = trial.suggest_categorical("vocab", [True, False])
    int8 = trial.suggest_categorical("int8", list(INT8))
    n_groups = trial.suggest_int("int8_groups", 1, len(GROUPS)) if int8 != "none" else 0
    lr = trial.suggest_float("lr", 1e-5, 1e-3, log=True)
    params = {"family": family, "n_layers": n_layers, "width": width, "heads_kept": heads_kept, "ffn_kept": ffn_kept,
              "vocab": vocab, "int8": int8, "int8_groups": n_groups, "lr": lr}
    return build_candidate(params, teacher, sensitivity)


def anchors(teacher: TeacherShape, families: tuple[str, ...]) -> list[dict]:
    """The first candidates, enqueued before the sampler's random start (as optuna params), one per region of the space,
    each a rule rather than a tuned number: half the teacher's depth at full width, the common distilled shape (half of
    every dimension, the pruned vocabulary, dynamic int8 everywhere: DistilBERT's and TinyBERT's halving), and one
    layer at half width; then the bag-of-embeddings student at full width. A random start over a conditional space can
    otherwise spend itself on one family (7 of the MiniLM search's first 8 draws were bag-of-embeddings students)."""
    out = []
    if "transformer" in families:
        half, everywhere = max(1, teacher.n_layers // 2), len(GROUPS)
        common = {"vocab": True, "int8": "dynamic", "int8_groups": everywhere, "lr": 1e-4}  # lr: the log-range's middle
        out += [{"n_layers": half, "width": 1.0, "heads_kept": 1.0, "ffn_kept": 1.0, **common},
                {"n_layers": half, "width": 0.5, "heads_kept": 0.5, "ffn_kept": 0.5, **common},
                {"n_layers": 1, "width": 0.5, "heads_kept": 0.5, "ffn_kept": 0.5, **common}]
        out = [{"family": "transformer", **a} for a in out]
    if "boe" in families:
        out.append({"family": "boe", "student_width": 1.0, "student_lr": 1e-3})
    if len(families) == 1:  # the sampler does not draw the family then
        out = [{k: v for k, v in a.items() if k != "family"} for a in out]
    return list({tuple(sorted(a.items())): a for a in out}.values())  # a one-layer teacher's anchors coincide


def build_candidate(params: dict, teacher: TeacherShape, sensitivity: dict) -> Candidate:
    """The Transformer candidate `params` describe: which layers, per-layer cuts and groups (from sensitivity), its shape."""
    layers = kept_layers(params["n_layers"], sensitivity["layers"])
    dim = teacher.dim if params["width"] >= 1.0 else round8(params["width"] * teacher.dim)
    head_dim = teacher.head_dim  # prune_width narrows the residual stream, not the heads
    heads = [teacher.n_heads[i] for i in layers]
    ffn = [teacher.ffn_dim[i] for i in layers]
    heads_plan = ffn_plan = None
    if params["heads_kept"] < 1.0:
        drops = [half_drop(sensitivity["heads"], i) for i in layers]
        heads_plan = allocate(1.0 - params["heads_kept"], heads, drops)
        heads = [n - round(f * n) for n, f in zip(heads, heads_plan, strict=True)]
    if params["ffn_kept"] < 1.0:
        drops = [half_drop(sensitivity["ffn"], i) for i in layers]
        ffn_plan = allocate(1.0 - params["ffn_kept"], ffn, drops)
        ffn = [n - round(f * n) for n, f in zip(ffn, ffn_plan, strict=True)]
    groups = int8_order(dict(zip(sensitivity["int8"]["groups"], sensitivity["int8"]["drops"],
                                 strict=True)))[: params["int8_groups"]]
    int8 = None if params["int8"] == "none" else params["int8"]
    shape = Shape(n_layers=len(layers), dim=dim, n_heads=tuple(heads), head_dim=head_dim, ffn_dim=tuple(ffn),
                  vocab_size=teacher.pruned_vocab_size if params["vocab"] else teacher.vocab_size,
                  int8=int8, int8_groups=tuple(groups) if int8 else ())
    params = {**params, "_teacher_heads": list(teacher.n_heads), "_teacher_dim": teacher.dim}
    return Candidate("transformer", params, shape, layers, heads_plan, ffn_plan, list(groups) if int8 else [])


def half_drop(table: dict, layer: int) -> float:
    """Layer `layer`'s accuracy points lost when half its units are cut (the nearest measured fraction to 0.5)."""
    fractions = table["fractions"]
    column = min(range(len(fractions)), key=lambda j: abs(fractions[j] - 0.5))
    return table["drops"][layer][column]


# --------------------------------------------------------------------------- the steps that build it


def training(fidelity: Fidelity, epochs: int, lr: float, transfer: dict) -> dict:
    """The optimiser fields of one training (distill or a cut's recovery) at this fidelity."""
    out = {"epochs": max(epochs, 1), "lr": lr, "batch_size": BATCH_SIZE, **transfer}
    if fidelity.max_steps is not None:
        out["max_steps"] = fidelity.max_steps
    return out


def candidate_steps(c: Candidate, prefix: str, fidelity: Fidelity, unlabeled: list[str]) -> list[dict]:
    """The recipe steps (plain dicts, as YAML would hold them) that build candidate `c` from the teacher stage, ending
    with an `evaluate` on the validation split of its last artifact. Stage names start with `prefix`."""
    transfer = {"unlabeled": list(unlabeled), "augment": {"copies": 1}}  # one masked/swapped copy of the training split
    p, steps = c.params, []
    if c.family != "transformer":
        student = {"kind": c.family, "dim": p["student_dim"]}
        steps.append({"kind": "distill", "name": f"{prefix}student", "student": student, "init": "random",
                      **training(fidelity, fidelity.distill_epochs, p["lr"], transfer)})
        return steps + [{"kind": "export"}, {"kind": "evaluate", "split": "validation"}]
    teacher_layers = len(p["_teacher_heads"])
    if len(c.layers) < teacher_layers:
        steps.append({"kind": "distill", "name": f"{prefix}student", "student": {"n_layers": len(c.layers)},
                      "init": "teacher_layers", "layer_map": c.layers,
                      **training(fidelity, fidelity.distill_epochs, p["lr"], transfer)})
    recover = {"recover": training(fidelity, fidelity.recover_epochs, p["lr"], transfer)}
    if c.shape.dim < p["_teacher_dim"]:
        steps.append({"kind": "prune_width", "name": f"{prefix}width", "dim": c.shape.dim, **recover})
    if c.heads_per_layer is not None:
        steps.append({"kind": "prune_heads", "name": f"{prefix}heads", "per_layer": c.heads_per_layer, **recover})
    if c.ffn_per_layer is not None:
        steps.append({"kind": "prune_ffn", "name": f"{prefix}ffn", "per_layer": c.ffn_per_layer, **recover})
    if p["vocab"]:
        steps.append({"kind": "prune_vocab", "name": f"{prefix}vocab", "extra_texts": list(unlabeled),
                      "splits": ["train", "validation"]})
    if steps:  # a new stage to export and score; without one the candidate is the teacher's own artifact, maybe quantized
        steps += [{"kind": "export"}, {"kind": "evaluate", "split": "validation"}]
    if c.shape.int8:
        include, exclude = quantize_globs(tuple(c.int8_groups))
        steps += [{"kind": "quantize", "name": f"{prefix}int8", "mode": c.shape.int8, "include": include, "exclude": exclude},
                  {"kind": "evaluate", "split": "validation"}]
    return steps


def epochs_for(seconds: float, seconds_per_example: float, n_examples: int, n_trainings: int) -> int:
    """Whole epochs of `n_examples` that `n_trainings` trainings fit in `seconds` (at least 1)."""
    if seconds_per_example <= 0 or n_examples <= 0:
        return 1
    return max(1, math.floor(seconds / (seconds_per_example * n_examples * max(n_trainings, 1))))
