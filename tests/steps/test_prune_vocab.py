"""prune_vocab: the embedding table and the tokenizer shrink to the task's tokens, and no prediction on the
task's texts changes (logits equal within 1e-6 on every split); recipes that would train against the
teacher afterwards are refused; end to end with prune_width through the CLI, variants included."""

import copy
import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

import cli
from compress.data import TokenizerConfig, encode_task, load_task, train_tokenizer
from compress.data.wordnet import WordNetConfig
from compress.errors import RecipeError
from compress.models import SlimformerConfig, SlimformerForSequenceClassification
from compress.models.modeling_rnn import SlimRNNConfig, SlimRNNForSequenceClassification
from compress.run.config import validate_recipe
from compress.steps.prune_vocab import frequent_ids, kept_ids, prune_vocab_, rebuild_tokenizer
from tests.helpers import logits

SEQ_LEN = 24
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def task():
    return load_task(WordNetConfig(max_examples=300, seq_len=SEQ_LEN), seed=0)


@pytest.fixture(scope="module")
def corpus():
    """Texts a tokenizer is trained on, as a pretrained one is: more than the task, and not all of it."""
    return load_task(WordNetConfig(max_examples=1500, seq_len=SEQ_LEN), seed=1).texts["train"]


def byte_level(texts: list[str]) -> PreTrainedTokenizerFast:
    """A RoBERTa-style tokenizer: byte-level BPE, <s> ... </s> from RobertaProcessing, no unk in the model."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=1500, special_tokens=specials, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    return PreTrainedTokenizerFast(tokenizer_object=tok, cls_token="<s>", bos_token="<s>", sep_token="</s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>", mask_token="<mask>", model_max_length=SEQ_LEN)


def tokenizer_of(kind: str, texts: list[str]):
    if kind == "byte_level":
        return byte_level(texts)
    return train_tokenizer(texts, TokenizerConfig(kind=kind, vocab_size=1500), SEQ_LEN)


@pytest.mark.parametrize("kind", ["wordpiece", "bpe", "char", "byte_level"])
def test_predictions_unchanged_on_every_split(task, corpus, kind, tmp_path):
    tokenizer = tokenizer_of(kind, corpus)
    torch.manual_seed(0)
    model = SlimformerForSequenceClassification(SlimformerConfig(
        vocab_size=len(tokenizer) + 7, max_len=SEQ_LEN, dim=32, n_layers=2, n_heads=2, ffn_dim=48, num_labels=task.n_classes,
        pad_token_id=tokenizer.pad_token_id)).eval()  # 7 rows the tokenizer never produces, as in imported checkpoints
    before = encode_task(task, tokenizer, SEQ_LEN)
    keep = kept_ids(tokenizer, [t for split in task.texts.values() for t in split], also=(tokenizer.pad_token_id,))
    pruned = prune_vocab_(copy.deepcopy(model), keep)
    smaller = rebuild_tokenizer(tokenizer, keep)
    smaller.save_pretrained(tmp_path)
    smaller = AutoTokenizer.from_pretrained(tmp_path)  # what a later stage, the export and `predict` read
    after = encode_task(task, smaller, SEQ_LEN)
    assert len(smaller) == len(keep) < len(tokenizer) and pruned.config.vocab_size == len(keep)
    assert pruned.get_input_embeddings().weight.shape == (len(keep), 32)
    assert smaller.pad_token_id == pruned.config.pad_token_id == keep.index(tokenizer.pad_token_id)
    for split in before:
        old, new = before[split], after[split]
        assert torch.equal(old["attention_mask"], new["attention_mask"]), split
        diff = (logits(model, old["input_ids"], old["attention_mask"])
                - logits(pruned, new["input_ids"], new["attention_mask"])).abs().max()
        assert diff <= 1e-6, f"{kind} {split}: logits differ by {diff:.2e}"
    unseen = smaller("zyzzyva qqq")["input_ids"]  # outside the kept set: the unknown token or kept pieces, never an error
    assert unseen[0] == smaller.cls_token_id and unseen[-1] == smaller.sep_token_id and max(unseen) < len(smaller)


@pytest.mark.parametrize("cell", ["boe", "gru"])
def test_students_without_attention_prune_too(task, corpus, cell):
    tokenizer = tokenizer_of("wordpiece", corpus)
    torch.manual_seed(0)
    model = SlimRNNForSequenceClassification(SlimRNNConfig(vocab_size=len(tokenizer), max_len=SEQ_LEN, cell=cell, dim=16,
                                                           hidden_dim=16, num_labels=task.n_classes)).eval()
    texts = [t for split in task.texts.values() for t in split]
    keep = kept_ids(tokenizer, texts, also=(0,))
    pruned = prune_vocab_(copy.deepcopy(model), keep)
    old, new = (encode_task(task, tokenizer, SEQ_LEN)["test"],
                encode_task(task, rebuild_tokenizer(tokenizer, keep), SEQ_LEN)["test"])
    assert pruned.embeddings.weight.shape == (len(keep), 16) and pruned.config.vocab_size == len(keep) < len(tokenizer)
    diff = (logits(model, old["input_ids"], old["attention_mask"])
            - logits(pruned, new["input_ids"], new["attention_mask"])).abs().max()
    assert diff <= 1e-6


def wordpiece(words: list[str]) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *words])},
                                     unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.BertProcessing(("[SEP]", 3), ("[CLS]", 2))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]")


def test_wordpiece_keeps_the_pieces_a_failed_word_tried():
    """'abcd' is [UNK] (abc, then no ##d); without 'abc' the pruned tokenizer would split it ab ##cd."""
    tok = wordpiece(["a", "ab", "abc", "##cd", "x", "##y", "zz"])
    texts = ["abcd ab", "x"]
    assert tok.convert_ids_to_tokens(tok("abcd ab")["input_ids"]) == ["[CLS]", "[UNK]", "ab", "[SEP]"]
    keep = kept_ids(tok, texts)
    assert [tok.convert_ids_to_tokens(i) for i in keep] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "ab", "abc", "x"]
    smaller = rebuild_tokenizer(tok, keep)
    assert smaller.convert_ids_to_tokens(smaller("abcd ab")["input_ids"]) == ["[CLS]", "[UNK]", "ab", "[SEP]"]
    assert smaller("x")["input_ids"] == [2, 6, 3]  # BertProcessing's ids renumbered


def test_bpe_keeps_the_merges_that_build_kept_tokens():
    """'abc' is built a+b -> ab, ab+c -> abc: ab, a, b, c stay although no text ends with them."""
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "a": 4, "b": 5, "c": 6, "d": 7, "ab": 8, "abc": 9, "dd": 10}
    tok = Tokenizer(models.BPE(vocab, [("a", "b"), ("ab", "c"), ("d", "d")], unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")
    keep = kept_ids(tok, ["abc"])
    assert [tok.convert_ids_to_tokens(i) for i in keep] == ["[PAD]", "[UNK]", "a", "b", "c", "ab", "abc"]
    smaller = rebuild_tokenizer(tok, keep)
    assert smaller.convert_ids_to_tokens(smaller("abc dd")["input_ids"]) == ["abc", "[UNK]", "[UNK]"]  # d is gone: unk


def test_max_size_keeps_the_most_frequent_tokens_and_every_character():
    """A cap of 14: the 4 specials, the 8 pieces of the texts' characters (a b c x, ##a ##b ##c ##x), then the 2 most
    used of ab (3 uses), abc (2), ##bc (1), xx (1). 'xbc' and 'xx' then split into kept pieces, not [UNK]; a text whose
    tokens all stay is tokenized as before."""
    tok = wordpiece(["a", "b", "c", "x", "##a", "##b", "##c", "##x", "ab", "abc", "##bc", "xx"])
    texts = ["ab ab ab", "abc abc", "xbc", "xx"]
    assert tok.convert_ids_to_tokens(tok("xbc xx")["input_ids"]) == ["[CLS]", "x", "##bc", "xx", "[SEP]"]
    keep = kept_ids(tok, texts)
    capped = frequent_ids(tok, texts, keep, max_size=14)
    assert len(capped) == 14 and {tok.convert_ids_to_tokens(i) for i in set(keep) - set(capped)} == {"##bc", "xx"}
    smaller = rebuild_tokenizer(tok, capped)
    assert smaller.convert_ids_to_tokens(smaller("xbc xx")["input_ids"]) == ["[CLS]", "x", "##b", "##c", "x", "##x", "[SEP]"]
    assert smaller.convert_ids_to_tokens(smaller("ab abc x")["input_ids"]) == ["[CLS]", "ab", "abc", "x", "[SEP]"]
    assert len(frequent_ids(tok, texts, keep, max_size=100)) == 16  # no cap reached: every token, and every character
    with pytest.raises(RecipeError, match=r"max_size 9 is below the 12 tokens.*at least 12"):
        frequent_ids(tok, texts, keep, max_size=9)


def test_max_size_keeps_a_bpe_token_with_the_parts_that_build_it():
    """abc (3 uses) needs ab; dd (2 uses) would need nothing more, but a cap of 8 leaves room for one merge's result."""
    vocab = {"[PAD]": 0, "[UNK]": 1, "a": 2, "b": 3, "c": 4, "d": 5, "ab": 6, "abc": 7, "dd": 8}
    tok = Tokenizer(models.BPE(vocab, [("a", "b"), ("ab", "c"), ("d", "d")], unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")
    texts = ["abc abc abc", "dd dd"]
    keep = kept_ids(tok, texts)
    assert [tok.convert_ids_to_tokens(i) for i in frequent_ids(tok, texts, keep, max_size=8)] == [
        "[PAD]", "[UNK]", "a", "b", "c", "d", "ab", "abc"]  # abc with its part ab (2 rows) fits; dd then does not
    assert [tok.convert_ids_to_tokens(i) for i in frequent_ids(tok, texts, keep, max_size=7)] == [
        "[PAD]", "[UNK]", "a", "b", "c", "d", "dd"]  # abc and ab need 2 rows: only dd fits


RECIPE = {"name": "r", "task": {"kind": "lookup"}, "teacher": {"dim": 32, "n_heads": 2, "ffn_dim": 64, "n_layers": 2}}


def test_training_against_the_teacher_after_prune_vocab_is_refused():
    steps = [{"kind": "train"}, {"kind": "prune_vocab"}]
    with pytest.raises(RecipeError, match=r"steps\[2\] \(distill 'kd'\) distils from the teacher, after steps\[1\] "
                                          r"\(prune_vocab.*original token ids"):
        validate_recipe(RECIPE | {"steps": [*steps, {"kind": "distill", "name": "kd", "student": {"n_layers": 1}}]})
    with pytest.raises(RecipeError, match=r"prune_heads 'prune_heads'\) recovers by distilling.*augment/unlabeled.*"
                                          r"drop its recover's augment/unlabeled/attention_output"):
        validate_recipe(RECIPE | {"steps": [*steps, {"kind": "prune_heads", "amount": 0.5,
                                                     "recover": {"augment": {"copies": 1}}}]})
    # a plain recovery distils the teacher's outputs computed from the run's own ids: allowed
    validate_recipe(RECIPE | {"steps": [*steps, {"kind": "prune_heads", "amount": 0.5}]})
    with pytest.raises(RecipeError, match=r"swap_attention 'linformer'\) starts from the teacher's model"):
        validate_recipe(RECIPE | {"steps": [*steps, {"kind": "swap_attention", "to": "linformer", "source": "teacher",
                                                     "recover": {"distill_from": "none"}}]})
    with pytest.raises(RecipeError, match=r"steps\[2\] \(train 'again'\) trains the recipe's teacher"):
        validate_recipe(RECIPE | {"steps": [*steps, {"kind": "train", "name": "again"}]})
    # a variant continuing from a trunk that pruned its vocabulary
    with pytest.raises(RecipeError, match=r"variants.kd\[0\] \(prune_width"):
        validate_recipe(RECIPE | {"steps": steps, "variants": {"kd": [{"kind": "prune_width", "amount": 0.25,
                                                                        "recover": {"augment": {"copies": 1}}}]}})
    # allowed: recovery on the labels alone, quantization, and anything before prune_vocab
    validate_recipe(RECIPE | {"steps": [{"kind": "train"}, {"kind": "prune_width", "amount": 0.25}, {"kind": "prune_vocab"},
                                        {"kind": "prune_ffn", "amount": 0.5, "recover": {"distill_from": "none"}},
                                        {"kind": "export"}, {"kind": "quantize"}]})
    # a branch whose `parent:` is a stage from before prune_vocab reads the original vocabulary: it may distil, and so
    # may its descendants; a step starting from the pruned stage (or what descends from it) may not
    branch = [{"kind": "train"}, {"kind": "prune_width", "name": "width", "amount": 0.25},
              {"kind": "prune_vocab", "name": "vocab"}, {"kind": "export"}, {"kind": "quantize", "name": "int8"},
              {"kind": "prune_heads", "name": "lean", "parent": "width", "amount": 0.5}, {"kind": "prune_ffn", "amount": 0.5}]
    validate_recipe(RECIPE | {"steps": branch})
    with pytest.raises(RecipeError, match=r"prune_ffn 'again'\) recovers by distilling.*"
                                          r"or start it from a stage before 'vocab' with `parent:`"):
        validate_recipe(RECIPE | {"steps": [*branch, {"kind": "prune_ffn", "name": "again", "parent": "vocab", "amount": 0.5,
                                                      "recover": {"augment": {"copies": 1}}}]})


def test_both_steps_through_the_cli_with_variants(tmp_path):
    """Trunk: teacher -> prune_width. Variant v prunes the vocabulary, exports and quantizes with the pruned tokenizer;
    variant w prunes FFN neurons of the trunk's stage and keeps the run's tokenizer. v's predictions equal the trunk's."""
    recipe = tmp_path / "slim.yaml"
    recipe.write_text(
        "name: slim\n"
        "task: {kind: wordnet, max_examples: 300, seq_len: 24, tokenizer: {vocab_size: 600}}\n"
        "teacher: {dim: 32, n_heads: 2, ffn_dim: 64, n_layers: 2}\n"
        "steps:\n"
        "  - {kind: train, epochs: 2}\n"
        "  - {kind: prune_width, name: narrow, amount: 0.25, score_batches: 2, score_batch_size: 16, recover: {epochs: 1}}\n"
        "  - {kind: evaluate}\n"
        "variants:\n"
        "  v: [{kind: prune_vocab, name: vocab}, {kind: export}, {kind: evaluate}, {kind: quantize}, {kind: evaluate}]\n"
        "  w: [{kind: prune_ffn, name: ffn, amount: 0.5, importance: magnitude, recover: {epochs: 0}}]\n"
        "  u: [{kind: prune_vocab, name: capped, max_size: 200}, {kind: export}, {kind: evaluate}]\n"
        "bench: {batch_sizes: [1], repeats: 3, warmup: 1, memory: false, interleave: false, threads: 1}\n"
    )
    assert cli.main(["run", str(recipe), "steps.teacher.max_steps=4", "steps.narrow.recover.max_steps=2",
                     "--runs-dir", str(tmp_path / "runs")]) == 0
    run_dir = tmp_path / "runs" / "slim"
    results = json.loads((run_dir / "results.json").read_text())
    jsonschema.validate(results, json.loads((ROOT / "eval" / "results_schema.json").read_text()))
    stages = {s["name"]: s for s in results["stages"]}
    width = stages["narrow"]["width"]
    assert (width["dim_before"], width["dim_after"], width["importance"]) == (32, 24, "taylor")
    assert width["params_after"] < width["params_before"] and "val_accuracy_before_recovery" in stages["narrow"]
    assert json.loads((run_dir / "stages/narrow/model/config.json").read_text())["dim"] == 24
    vocab = stages["v.vocab"]["vocab"]
    assert vocab["vocab_size_after"] < vocab["vocab_size_before"] == 600 and vocab["max_abs_logit_diff"] <= 1e-6
    for folder in ("stages/v.vocab/model", "stages/v.vocab/onnx", "stages/v.int8/onnx"):  # the stage's own tokenizer travels
        assert len(AutoTokenizer.from_pretrained(run_dir / folder)) == vocab["vocab_size_after"], folder
    assert len(AutoTokenizer.from_pretrained(run_dir / "stages/w.ffn/model")) == 600, "variant w starts from the run's tokenizer"
    # not one prediction changed: the pruned stage's ONNX logits equal the trunk stage's torch logits on the same examples
    narrow, pruned = (np.load(run_dir / f"stages/{s}/test_logits.npy") for s in ("narrow", "v.vocab"))
    assert np.abs(narrow - pruned).max() <= 1e-4 and stages["v.vocab"]["accuracy"] == stages["narrow"]["accuracy_torch"]
    capped = stages["u.capped"]["vocab"]  # a size budget: 200 rows, and the texts that used a dropped token counted
    assert capped["vocab_size_after"] == 200 < capped["tokens_used"] == vocab["vocab_size_after"] and capped["max_size"] == 200
    assert capped["retokenized"]["test"] > 0 and capped["max_abs_logit_diff"] <= 1e-6
    assert len(AutoTokenizer.from_pretrained(run_dir / "stages/u.capped/onnx")) == 200
    assert stages["v.int8"]["accuracy"] is not None and stages["v.int8"]["quantization"]["check"]["argmax_agreement"] > 0.5
