"""An embedding task end to end on a tiny sentence-transformers teacher: the teacher as it is, every compression step
in embedding mode with recovery on the embedding loss (a test per step), the ONNX `sentence_embedding` output against
torch, the retrieval and fidelity rows with intervals, the TF-IDF reference, and sentence-transformers loading a pruned
stage's folder with the same embeddings.

The teacher is a tiny random BERT laid out as a sentence-transformers folder (tests/helpers.py); the texts are a seeded
160 of the shipped WordNet synsets; nothing comes from a hub.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

import cli
from tests.helpers import tiny_sentence_transformer

ROOT = Path(__file__).resolve().parents[2]

RECIPE = ROOT / "recipes" / "minilm_embed.yaml"
SHRINK = [  # the shipped recipe on a tiny teacher and 160 synsets: its smoke run (tests/run/test_pipeline.py leaves it here)
    "task.seq_len=16", "task.max_synsets=160", "task.test_fraction=0.25", "task.validation_fraction=0.1",
    "task.max_train_synsets=null",
    "task.corpus=all", "variants.kd.student.student.n_layers=1", "variants.kd.vocab.max_size=null",
    *[f"variants.kd.{name}.recover.max_steps=1" for name in ("heads", "ffn")],
    "variants.kd.student.max_steps=2", "variants.static.boe.max_steps=2", "steps.baseline.ngram_max=1",
    "bench.batch_sizes=[1]", "bench.seq_lens=null", "bench.repeats=3", "bench.warmup=1", "bench.traffic_texts=8",
    "bench.interleave=false", "bench.threads=1",
]


def with_test_branches(recipe: dict) -> dict:
    """The shipped recipe plus what its steps do not cover: kd.heads again from the student, before the vocabulary cut
    (its recovery must match the one after it), and a `narrow` variant cutting the width (a projection), then the
    vocabulary to 60 tokens (a `max_size` cap that splits texts anew), then heads with recovery after that cut."""
    kd = recipe["variants"]["kd"]
    heads = next(step for step in kd if step.get("name") == "heads")
    kd.append({**heads, "name": "heads_before_vocab", "parent": "student"})
    recover = {"epochs": 1, "max_steps": 1, "lr": 2.0e-4, "batch_size": 8, "embedding": {"mse": 1.0, "cosine": 1.0}}
    recipe["variants"]["narrow"] = [
        {"kind": "prune_width", "name": "width", "dim": 16, "recover": recover},
        {"kind": "prune_vocab", "name": "vocab", "splits": ["train", "validation"], "max_size": 60},
        {"kind": "prune_heads", "name": "heads", "amount": 0.5, "recover": recover},
    ]
    return recipe


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    import yaml

    root = tmp_path_factory.mktemp("embed")
    ckpt = tiny_sentence_transformer(root / "ckpt")
    recipe = root / "minilm_embed.yaml"
    recipe.write_text(yaml.safe_dump(with_test_branches(yaml.safe_load(RECIPE.read_text())), sort_keys=False))
    assert cli.main(["run", str(recipe), f"teacher.from={ckpt}", *SHRINK, "--runs-dir", str(root / "runs")]) == 0
    return root / "runs" / "minilm_embed"


@pytest.fixture(scope="module")
def stages(run):
    return {s["name"]: s for s in json.loads((run / "results.json").read_text())["stages"]}


def config_of(run, stage):
    return json.loads((run / "stages" / stage / "model" / "config.json").read_text())


def test_the_teacher_is_the_sentence_transformer_as_it_is(run, stages):
    import jsonschema

    schema = json.loads((ROOT / "eval" / "results_schema.json").read_text())
    jsonschema.validate(json.loads((run / "results.json").read_text()), schema)
    teacher = stages["teacher"]
    assert teacher["parity"]["max_abs_diff"] <= 1e-5 and teacher["params"] > 0 and teacher["traffic"]
    assert teacher["fit"] is False and teacher["embedding"]["pooling"] == "mean" and teacher["embedding"]["normalize"]
    fidelity = teacher["embedding_eval"]["fidelity"]
    assert fidelity["cosine"]["mean"] == pytest.approx(1.0, abs=1e-6) and fidelity["knn_overlap"]["mean"] == 1.0
    retrieval = teacher["embedding_eval"]["retrieval"]
    assert retrieval["n_queries"] == 40 and 0 <= retrieval["recall@1"]["mean"] <= retrieval["recall@10"]["mean"] <= 1
    assert retrieval["recall@10"]["ci"][0] <= retrieval["recall@10"]["mean"] <= retrieval["recall@10"]["ci"][1]


def test_the_onnx_output_is_the_sentence_embedding_and_matches_torch(run, stages):
    import onnxruntime as ort

    from compress.models import SlimformerForSequenceClassification

    folder = run / "stages" / "kd.ffn"
    session = ort.InferenceSession(str(folder / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["sentence_embedding"]
    model = SlimformerForSequenceClassification.from_pretrained(folder / "model").eval()
    ids = torch.tensor([[2, 9, 10, 11, 3, 0], [2, 12, 3, 0, 0, 0]])
    mask = (ids > 0).long()
    got = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).logits.numpy()
    assert got.shape == (2, 32) and np.abs(got - expected).max() <= 1e-5
    assert stages["kd.ffn"]["parity"]["max_abs_diff"] <= 1e-5


def test_distill_learns_the_teachers_embeddings(run, stages):
    student = stages["kd.student"]
    assert student["val_cosine"] > 0.5 and "val_accuracy" not in student
    assert config_of(run, "kd.student")["embedding_dim"] == 32 and config_of(run, "kd.student")["normalize"] is True


@pytest.mark.parametrize("stage, field, before", [("kd.heads", "n_heads", 4), ("kd.ffn", "ffn_dim", 48)])
def test_head_and_ffn_pruning_recover_on_the_embedding_loss(run, stages, stage, field, before):
    assert 0 < config_of(run, stage)[field][0] < before  # of 4 heads, 48 neurons
    assert {"val_cosine", "val_cosine_before_recovery"} <= set(stages[stage]) and stages[stage]["train_curve"]


def test_width_pruning_keeps_the_embedding_width_with_a_projection(run, stages):
    config = config_of(run, "narrow.width")
    assert config["dim"] == 16 and config["embedding_dim"] == 32
    assert stages["narrow.width"]["val_cosine"] > 0 and stages["narrow.width"]["width"]["val_cosine_unpruned"] > 0


def test_vocabulary_pruning_keeps_only_the_training_texts_tokens(stages):
    vocab = stages["kd.vocab"]["vocab"]
    assert vocab["splits"] == ["train", "validation"] and vocab["vocab_size_after"] < vocab["vocab_size_before"]
    capped = stages["narrow.vocab"]["vocab"]
    assert capped["vocab_size_after"] == 60 < capped["tokens_used"] and capped["retokenized"]["train"] > 0


def test_recovery_after_the_vocabulary_cut_distils_the_teacher_on_its_own_ids(stages):
    """The teacher reads the run's ids, the student the pruned ones: with every used token kept, the head cut and its
    recovery after prune_vocab match the same cut before it (a teacher fed the pruned ids would be far off)."""
    after, before = stages["kd.heads"], stages["kd.heads_before_vocab"]
    for key in ("val_cosine_before_recovery", "val_cosine"):
        assert after[key] == pytest.approx(before[key], abs=1e-5), key
    assert [p["train_loss"] for p in after["train_curve"]] == pytest.approx(
        [p["train_loss"] for p in before["train_curve"]], abs=1e-5)
    assert stages["narrow.heads"]["val_cosine"] > 0 and stages["narrow.heads"]["train_curve"]


def test_int8_and_the_static_student_are_measured_against_the_teacher(stages):
    assert stages["static.boe"]["distill"]["student"] == "boe" and stages["static.boe"]["val_cosine"] > 0
    for name, runtime in (("kd.ffn", "onnxruntime"), ("kd.int8", "onnxruntime"), ("static.boe", "onnxruntime")):
        record = stages[name]["embedding_eval"]
        assert record["runtime"] == runtime and -1 <= record["fidelity"]["cosine"]["mean"] <= 1
        assert record["retrieval_delta"]["recall@10"]["baseline"] == "teacher"
        assert 0 <= record["fidelity"]["knn_overlap"]["mean"] <= 1
    assert stages["kd.int8"]["precision"] == "int8"


def test_the_tfidf_reference_row(stages):
    baseline = stages["baseline"]
    assert baseline["reference"] is True and baseline["embedding_eval"]["runtime"] == "sklearn"
    assert baseline["embedding_eval"]["retrieval_delta"]["mrr"]["baseline"] == "teacher"


def test_sentence_transformers_loads_a_pruned_stage_with_equal_embeddings(run):
    from transformers import AutoTokenizer

    from compress.models import SlimformerForSequenceClassification

    folder = run / "stages" / "narrow.heads" / "model"  # width, vocabulary (capped) and heads cut: a 2_Dense projection
    texts = ["the movie was good", "a very bad day", "fine"]
    st = SentenceTransformer(str(folder), trust_remote_code=True, device="cpu")
    assert [type(m).__name__ for m in st] == ["Transformer", "Pooling", "Dense", "Normalize"]
    theirs = st.encode(texts, convert_to_tensor=True)
    model = SlimformerForSequenceClassification.from_pretrained(folder).eval()
    batch = AutoTokenizer.from_pretrained(folder)(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert theirs.shape == (3, 32) and (ours - theirs).abs().max() <= 1e-5


def test_embed_writes_a_files_embeddings_in_order(run, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("the movie was good\n\nfine\n")
    folder = run / "stages" / "kd.int8" / "onnx"
    assert cli.main(["embed", str(folder), "--input", str(texts), "--output", str(tmp_path / "out.npy"), "--threads", "1"]) == 0
    vectors = np.load(tmp_path / "out.npy", allow_pickle=False)
    assert vectors.shape == (2, 32) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)  # the blank line dropped
    assert cli.main(["embed", str(folder), "--input", str(texts), "--output", str(tmp_path / "x.csv")]) == 2


def test_the_report_has_the_embedding_columns(run):
    report = (run / "report.md").read_text()
    assert "Recall@10 %" in report and "Cosine w/ teacher" in report and "Accuracy % (ONNX)" not in report
