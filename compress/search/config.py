"""What `slimformer compress` was asked (`SearchConfig`: the teacher, the data, the budget, the time), checked before
anything runs, and the `--time` parser."""

import re
from dataclasses import dataclass, field
from pathlib import Path

from compress.errors import RecipeError
from compress.search.front import Budget
from compress.search.space import DEFAULT_FAMILIES, FAMILIES


@dataclass
class SearchConfig:
    """What `slimformer compress` was asked: the teacher, the data, the budget and the time."""

    teacher: Path  # a model folder (kept as it is) or a recipe (its steps up to its teacher are run)
    budget: Budget
    batch_size: int = 8
    seq_len: int | None = None  # default: the recipe's, else 128 (the teacher's positions bound it)
    time_s: float = 3600.0
    train: Path | None = None
    validation: Path | None = None
    test: Path | None = None
    unlabeled: list[Path] = field(default_factory=list)
    text_column: str = "text"
    label_column: str = "label"
    name: str | None = None
    runs_dir: Path = Path("runs")
    seed: int = 0
    threads: int = 2
    families: tuple[str, ...] = DEFAULT_FAMILIES
    isolate: bool = True  # each trial in a process of its own
    latency_fit: int = 16  # random shapes the latency model is fitted on (cached points count)
    latency_holdout: int = 20  # random shapes held back to measure its error
    max_trials: int | None = None  # stop drawing after this many cheap candidates (tests)
    latency_model: Path | None = None  # a latency_model.json fitted before on this machine, for this protocol: reused
    full_epochs: int | None = None  # fixes the full recovery's epochs instead of fitting them to the time left (tests)
    command: str = ""

    def check(self) -> None:
        if self.batch_size < 1:
            raise RecipeError(f"--batch-size {self.batch_size}: give a positive batch size")
        if self.seq_len is not None and self.seq_len < 3:
            raise RecipeError(f"--seq-len {self.seq_len}: give at least 3 tokens ([CLS], one token, [SEP])")
        if not self.time_s > 0:
            raise RecipeError(f"--time {self.time_s}: give a positive duration, e.g. 30m or 2h")
        if self.threads < 1:
            raise RecipeError(f"--threads {self.threads}: give at least 1")
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown or not self.families:
            raise RecipeError(f"--families {list(self.families)}: choose among {list(FAMILIES)}")


def parse_time(text: str) -> float:
    """`90s`, `20m`, `2h`, `1h30m` or plain seconds -> seconds."""
    raw = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", raw):
        return float(raw)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", raw)
    if not parts or "".join(n + u for n, u in parts) != raw.replace(" ", ""):
        raise RecipeError(f"--time {text!r}: give a duration such as 90s, 20m, 2h or 1h30m")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
