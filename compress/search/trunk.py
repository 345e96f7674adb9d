"""The trunk: the recipe every trial starts with (the teacher kept as it is, or a user recipe's steps up to its
teacher), the search folder's default name, the blind view trials get of the data (no test file), and what the
trunk holds that sizes the space (the rows `prune_vocab` would keep, the transfer set's size)."""

import json
from pathlib import Path

from compress.errors import RecipeError
from compress.search.config import SearchConfig
from compress.search.trials import TRIALS_RUN


def trunk_recipe(cfg: SearchConfig) -> tuple[dict, Path | None]:
    """The recipe every trial starts with (as a YAML mapping) and the folder its relative paths are relative to.

    A model folder: a `files` task on the given files and the folder kept as it is (`train` with `fit: false`).
    A recipe: its task and seed, its steps up to its last `train` (the teacher), with the given files laid over."""
    from compress.run.config import load_recipe

    source = cfg.teacher
    if source.is_dir():
        missing = [flag for flag, path in (("--train", cfg.train), ("--validation", cfg.validation), ("--test", cfg.test))
                   if path is None]
        if missing:
            raise RecipeError(f"{source} is a model folder: give the data files too ({', '.join(missing)}): the search "
                              "chooses on --validation and scores the front on --test once it has chosen")
        task = {"kind": "files", "train": str(cfg.train.resolve()), "validation": str(cfg.validation.resolve()),
                "test": str(cfg.test.resolve()), "text_column": cfg.text_column, "label_column": cfg.label_column,
                "seq_len": cfg.seq_len or 128}
        teacher = {"from": str(source.resolve())}
        steps = [{"kind": "train", "fit": False}]
        seed, base = cfg.seed, None
    else:
        recipe, path = load_recipe(source)
        data = json.loads(recipe.model_dump_json(by_alias=True))
        last = max((i for i, s in enumerate(recipe.steps) if s.kind == "train"), default=None)
        if last is None:
            raise RecipeError(f"{source}: the recipe has no `train` step, so no teacher to compress; add one, or give a "
                              "model folder")
        task, teacher, steps = data["task"], data["teacher"], [
            {k: v for k, v in s.items() if v is not None} for s in data["steps"][: last + 1]]
        if recipe.teacher.imports():
            teacher = {"from": teacher["from"],
                       **({"pooling": teacher["pooling"]} if "pooling" in recipe.teacher.model_fields_set else {})}
            task.pop("tokenizer", None)
        for flag, key in (("train", "train"), ("validation", "validation"), ("test", "test")):
            if getattr(cfg, flag) is not None:
                if task.get("kind") != "files":
                    raise RecipeError(f"--{flag}: the recipe's task is {task.get('kind')!r}, not files; leave --{flag} out")
                task[key] = str(getattr(cfg, flag).resolve())
        if cfg.seq_len is not None:
            task["seq_len"] = cfg.seq_len
        seed, base = recipe.seed, path.parent.resolve()
        for key in ("train", "validation", "test"):
            if task.get("kind") == "files" and task.get(key) and not Path(task[key]).is_absolute():
                task[key] = str((base / task[key]).resolve())
        if teacher.get("from") and not Path(teacher["from"]).is_absolute():
            teacher["from"] = str((base / teacher["from"]).resolve())
    steps += [{"kind": "export"}, {"kind": "evaluate", "split": "validation"}]
    recipe = {"name": TRIALS_RUN, "seed": seed, "task": task, "teacher": teacher, "steps": steps,
              "bench": {"threads": cfg.threads, "batch_sizes": [cfg.batch_size], "interleave": False, "memory": False}}
    return recipe, base


def default_name(source: Path) -> str:
    """`compress-<what was compressed>`: a recipe's own name (quickstart.yaml -> compress-quickstart), a slimformer
    stage's run and stage (runs/minilm_vader/stages/teacher/model -> compress-minilm_vader-teacher), else the folder's
    name (models/my-bert -> compress-my-bert)."""
    from compress.run.config import load_recipe

    if not source.is_dir():
        return f"compress-{load_recipe(source)[0].name}"  # loads: trunk_recipe has already read it
    parts = source.resolve().parts
    if len(parts) >= 4 and parts[-1] in ("model", "onnx") and parts[-3] == "stages":
        return f"compress-{parts[-4]}-{parts[-2]}"
    return f"compress-{source.resolve().name}"


def blind(recipe: dict) -> dict:
    """The recipe as trials run it: a `files` task names its validation file as test, so no trial opens the test file."""
    task = recipe["task"]
    if task.get("kind") == "files" and task.get("test") and task.get("validation"):
        return {**recipe, "task": {**task, "test": task["validation"]}}
    return recipe



def pruned_vocab_size(ctx, unlabeled: list[str]) -> int:
    """About the rows prune_vocab keeps: the distinct ids of the training and validation texts and the transfer files,
    plus the special tokens (it also keeps a few pieces WordPiece tried; the measured size is what counts)."""
    import torch

    from compress.data import encode
    from compress.data.unlabeled import read_unlabeled

    ids = set()
    for split in ("train", "validation"):
        ids |= set(torch.unique(ctx.base_encoded[split]["input_ids"]).tolist())
    for path in unlabeled:
        texts, _ = read_unlabeled(path, "text", None)
        ids |= set(torch.unique(encode(ctx.base_tokenizer, texts, ctx.recipe.task.seq_len)["input_ids"]).tolist())
    ids |= set(ctx.base_tokenizer.all_special_ids)
    return len(ids)


def transfer_size(ctx, unlabeled: list[str]) -> int:
    """Examples in a candidate's transfer set: the training split, one augmented copy of it, the unlabelled texts."""
    from compress.data.unlabeled import read_unlabeled

    return 2 * len(ctx.data.labels["train"]) + sum(len(read_unlabeled(p, "text", None)[0]) for p in unlabeled)
