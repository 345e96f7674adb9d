"""Text pairs: an imported BERT classifier reads both segments as the checkpoint does (its token-type table imported
whole, each token's type derived from the separator), on pairs encoded by the checkpoint's own tokenizer; the ONNX
artifact takes no token_type_ids input and gives the same logits."""

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, processors
from transformers import AutoTokenizer, BertForSequenceClassification

import cli
from compress.data.tokenizer import PAIR_SEPARATOR, encode
from compress.models.import_hf import import_pretrained
from tests.helpers import WORDS, tiny_bert_folder

PAIRS = [("the movie was good", "a very fine day"), ("bad", "the movie was not poor and not sad at all"), ("great", "great")]


def pair_checkpoint(folder):
    """tiny_bert_folder's classifier with a tokenizer that encodes pairs as BERT does: [CLS] A [SEP] B [SEP], types 0/1."""
    folder = tiny_bert_folder(folder, n_labels=3)
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.save(str(folder / "tokenizer.json"))
    model = BertForSequenceClassification.from_pretrained(folder)
    torch.manual_seed(1)
    with torch.no_grad():  # a random init's logits barely move with the input: make the segments and the head matter
        for module in (model.bert.embeddings.token_type_embeddings, model.bert.embeddings.word_embeddings, model.classifier):
            module.weight.normal_(0.0, 1.0)
        model.bert.pooler.dense.weight.normal_(0.0, 0.3)
    model.save_pretrained(folder)
    return folder


def test_pair_logits_equal_the_checkpoints_for_both_segments(tmp_path):
    folder = pair_checkpoint(tmp_path / "ckpt")
    original = BertForSequenceClassification.from_pretrained(folder).eval()
    assert original.bert.embeddings.token_type_embeddings.weight[1].abs().sum() > 0  # segment B has its own row
    tokenizer = AutoTokenizer.from_pretrained(folder)
    theirs_in = tokenizer([a for a, _ in PAIRS], [b for _, b in PAIRS], padding=True, return_tensors="pt",
                          return_token_type_ids=True)
    assert set(theirs_in["token_type_ids"].flatten().tolist()) == {0, 1}
    with torch.no_grad():
        expected = original(**theirs_in).logits
    imported = import_pretrained(folder, pairs=True)
    assert imported.model.config.type_vocab_size == 2 and imported.model.config.sep_token_id == 3
    ours_in = encode(imported.tokenizer, [f"{a}{PAIR_SEPARATOR}{b}" for a, b in PAIRS], 24)  # the files task's pairs
    width = theirs_in["input_ids"].shape[1]
    assert torch.equal(ours_in["input_ids"][:, :width], theirs_in["input_ids"])
    with torch.no_grad():
        got = imported.model(input_ids=ours_in["input_ids"], attention_mask=ours_in["attention_mask"]).logits
    assert (got - expected).abs().max() <= 1e-5
    single = import_pretrained(folder)  # a single-text task: row 0 folded, no segment table, B read as type 0
    assert single.model.embeddings.typ is None
    with torch.no_grad():
        folded = single.model(input_ids=ours_in["input_ids"], attention_mask=ours_in["attention_mask"]).logits
    assert (folded - expected).abs().max() > 1e-4


RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "minilm_pairs.yaml"


def test_the_shipped_pair_recipe_reports_the_teacher_and_its_student(tmp_path):
    """recipes/minilm_pairs.yaml on the tiny pair checkpoint and a pair CSV in its vocabulary (its smoke run:
    tests/run/test_pipeline.py leaves it here): the teacher and its student read segments, rows in the report."""
    ckpt = pair_checkpoint(tmp_path / "ckpt")
    rows = ["word,gloss,label"] + [f"{WORDS[i % 8]},the movie was {WORDS[(i + i // 8) % 8]},{'defines' if i % 3 else 'other'}"
                                   for i in range(48)]
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    shrink = [f"teacher.from={ckpt}", "task.seq_len=16",
              *[f"task.{s}={tmp_path / 'pairs.csv'}" for s in ("train", "validation", "test")],
              "steps.teacher.max_steps=2", "steps.student.max_steps=2", "steps.student.student.n_layers=1",
              "steps.baseline.C=[1.0]",
              "bench.batch_sizes=[1]", "bench.seq_lens=null", "bench.repeats=3", "bench.warmup=1", "bench.traffic_texts=8",
              "bench.interleave=false", "bench.threads=1", "bench.torch=false"]
    assert cli.main(["run", str(RECIPE), *shrink, "--runs-dir", str(tmp_path / "runs")]) == 0
    run = tmp_path / "runs" / "minilm_pairs"
    stages = {s["name"]: s for s in json.loads((run / "results.json").read_text())["stages"]}
    for name in ("teacher", "student"):
        config = json.loads((run / "stages" / name / "model" / "config.json").read_text())
        assert config["type_vocab_size"] == 2 and config["sep_token_id"] == 3, name
        assert 0 <= stages[name]["accuracy"] <= 1 and stages[name]["parity"]["max_abs_diff"] <= 1e-4
    assert stages["int8"]["accuracy"] is not None
    report = (run / "report.md").read_text()
    assert "| teacher |" in report and "| student |" in report


def test_a_pair_model_exports_without_a_token_type_input(tmp_path):
    import onnxruntime as ort

    from compress.onnx.export import ExportOptions, export_stage

    folder = pair_checkpoint(tmp_path / "ckpt")
    imported = import_pretrained(folder, pairs=True)
    batch = encode(imported.tokenizer, [f"{a}{PAIR_SEPARATOR}{b}" for a, b in PAIRS], 24)
    parity = export_stage(imported.model, imported.tokenizer, tmp_path / "onnx", (batch["input_ids"], batch["attention_mask"]),
                          ExportOptions(fuse=False))
    assert parity["max_abs_diff"] <= 1e-5
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
