"""Length curriculum: phases redraw the task inside their window, never train on held-out texts,
run in order before the task, and a curriculum the task cannot redraw is refused with its place."""

import json

import pytest

import cli
from compress.data import LookupConfig, encode_task, load_task, train_tokenizer
from compress.run.config import validate_recipe
from compress.training.curriculum import CurriculumPhase, held_out_texts, phase_splits, phase_task

TASK = dict(n_train=120, n_validation=20, n_test=20, n_keys=6, key_len=1, min_pairs=3, max_pairs=5,
            min_length=60, max_length=80, seq_len=82, joined=True,
            tokenizer={"kind": "wordpiece", "vocab_size": 200, "lowercase": False})


@pytest.fixture(scope="module")
def task():
    cfg = LookupConfig(**TASK)
    data = load_task(cfg, seed=0)
    return cfg, data, train_tokenizer(data.texts["train"], cfg.tokenizer, cfg.seq_len)


def test_a_phase_redraws_the_task_inside_its_window(task):
    cfg, data, tok = task
    phase = CurriculumPhase(min_length=8, max_length=12, n_train=50)
    splits = phase_splits(cfg, phase, 0, None, tok, held_out_texts(data))
    assert splits["train"]["input_ids"].shape[0] == 50 and splits["validation"]["input_ids"].shape[0] == cfg.n_validation
    for split in splits.values():
        words = split["attention_mask"].sum(dim=1) - 2  # [CLS] and [SEP]
        assert int(words.min()) >= 8 and int(words.max()) <= 12
    # the task itself is untouched: same data, same length window
    assert (cfg.min_length, cfg.max_length) == (60, 80)
    assert load_task(cfg, seed=0).texts == data.texts


def test_a_phase_never_trains_on_the_tasks_held_out_texts(task):
    cfg, data, tok = task
    phase = CurriculumPhase(min_length=8, max_length=12, n_train=50)
    drawn = load_task(phase_task(cfg, phase, "here"), seed=0).texts["train"]
    held_out = set(drawn[:7])  # as if 7 phase texts were validation or test texts of the task
    splits = phase_splits(cfg, phase, 0, None, tok, held_out)
    assert splits["train"]["input_ids"].shape[0] == 50 - 7
    kept = encode_task(load_task(phase_task(cfg, phase, "here"), seed=0), tok, cfg.seq_len)["train"]["input_ids"][7:]
    assert (splits["train"]["input_ids"] == kept).all()


RECIPE = f"""\
name: cur
task: {json.dumps({"kind": "lookup", **TASK})}
teacher: {{dim: 32, n_heads: 2, ffn_dim: 64, n_layers: 2, pooling: cls}}
steps:
  - kind: train
    max_steps: 2
    batch_size: 16
    curriculum:
      - {{min_length: 8, max_length: 12, n_train: 40, epochs: 2}}
      - {{min_length: 20, max_length: 30, n_train: 32}}
  - kind: swap_attention
    to: performer
    args: {{n_features: 8}}
    recover: {{max_steps: 2, batch_size: 16, curriculum: [{{min_length: 8, max_length: 12, n_train: 24}}]}}
bench: {{batch_sizes: [1], repeats: 3, warmup: 1, memory: false, torch: false, threads: 1}}
"""


def test_the_phases_run_in_order_before_the_task_and_are_recorded(tmp_path):
    """The teacher's phases, then its training on the task; a swap's recovery phases (the teacher run live on them),
    then its recovery."""
    recipe = tmp_path / "cur.yaml"
    recipe.write_text(RECIPE)
    assert cli.main(["run", str(recipe), "--runs-dir", str(tmp_path / "runs")]) == 0
    run = tmp_path / "runs" / "cur"
    teacher = json.loads((run / "results.json").read_text())["stages"][0]
    # max_steps 2 holds in every phase: phase 1 stops after 2 steps (epoch 1), phase 2 after 2
    assert ([(p["min_length"], p["max_length"], p["n_train"], p["steps"]) for p in teacher["curriculum"]]
            == [(8, 12, 40, 2), (20, 30, 32, 2)])
    assert teacher["train_curve"][-1]["step"] == 2  # then the task itself, from the curriculum's model
    phases = [json.loads(line).get("phase") for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [p for p in phases if p is not None] == [0, 1, 0]  # one epoch line per phase (max_steps stops each after its first)
    swapped = json.loads((run / "results.json").read_text())["stages"][1]
    assert [(p["min_length"], p["n_train"], p["steps"]) for p in swapped["curriculum"]] == [(8, 24, 2)]
    assert swapped["train_curve"][-1]["step"] == 2


@pytest.mark.parametrize("change, message", [
    ({"task": {"kind": "listops", "min_length": 5, "max_length": 30, "seq_len": 40},
      "curriculum": [{"min_length": 5, "max_length": 50}]},
     r"steps\[0\]\.curriculum\[0\]: max_length 50 does not fit task\.seq_len 40"),
    ({"curriculum": [{"min_length": 12, "max_length": 8}]}, r"min_length \(12\) > max_length \(8\)"),
    ({"curriculum": [{"min_length": 4, "max_length": 8}]},
     r"steps\[0\]\.curriculum\[0\]: the task at min_length 4, max_length 8 is not valid: "
     r"min_length \(4\) is shorter than 5 pairs"),
    ({"task": {"kind": "lookup", "seq_len": 40}, "curriculum": [{"min_length": 8, "max_length": 12}]},
     r"steps\[0\]\.curriculum\[0\]: a length curriculum redraws .* task kind 'lookup' has no length window"),
    ({"task": {"kind": "wordnet"}, "curriculum": [{"min_length": 8, "max_length": 12}]},
     r"task kind 'wordnet' has no length window"),
])
def test_a_curriculum_the_task_cannot_redraw_is_refused_with_its_place(change, message):
    step = {"kind": "train", "curriculum": change["curriculum"]}
    data = {"name": "c", "task": change.get("task", {"kind": "lookup", **TASK}), "steps": [step]}
    with pytest.raises(Exception, match=message):
        validate_recipe(data)
    # the same phases in a swap's recovery, in a variant: the place names that list
    swap = {"kind": "swap_attention", "to": "performer", "recover": {"curriculum": change["curriculum"]}}
    data = {**data, "steps": [{"kind": "train"}], "variants": {"v": [swap]}}
    with pytest.raises(Exception, match=message.replace(r"steps\[0\]\.curriculum", r"variants\.v\[0\]\.recover\.curriculum")):
        validate_recipe(data)
