"""Masked-language pretraining: BERT's 80/10/10 masking that never touches special or padding
tokens, whole-word masking, a falling MLM loss in the one training loop, a pretrained stage that
reloads with `from_pretrained` and that `train` fine-tunes, and corpus files checked up front."""

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import cli
from compress.data import TokenizerConfig, encode, train_tokenizer
from compress.models import ATTENTION, SlimformerConfig, SlimformerForSequenceClassification, register_auto_classes
from compress.steps.pretrain import MaskedLM, continuation_ids, mask_tokens, mlm_evaluator, mlm_loss, special_ids
from compress.training.loop import OptimConfig, train

WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "to", "park", "unbelievable", "happiness", "quickly"]


def corpus(n: int, seed: int = 0) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    return [" ".join(WORDS[i] for i in torch.randint(len(WORDS), (int(torch.randint(3, 9, (1,), generator=g)),), generator=g))
            for _ in range(n)]


def test_masking_is_80_10_10_and_never_touches_special_or_padding():
    g = torch.Generator().manual_seed(0)
    B, T, V = 4000, 32, 100
    ids = torch.randint(5, V, (B, T), generator=g)
    lengths = torch.randint(4, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None] < lengths[:, None]).long()  # (B, T) right-padded
    ids[mask == 0] = 0
    ids[:, 0] = 2  # [CLS]
    ids[torch.arange(B), lengths - 1] = 3  # [SEP]
    special = torch.zeros(V, dtype=torch.bool)
    special[:5] = True
    masked, labels = mask_tokens(ids, mask, special, None, 4, 0.15, torch.Generator().manual_seed(1))
    chosen = labels != -100
    maskable = mask.bool() & ~special[ids]
    assert not (chosen & ~maskable).any(), "a special or padding token was chosen"
    assert torch.equal(masked[~maskable], ids[~maskable]), "a special or padding token was changed"
    assert chosen.sum() / maskable.sum() == pytest.approx(0.15, abs=0.005)
    n = chosen.sum().item()
    to_mask = (masked[chosen] == 4).sum().item() / n
    kept = (masked[chosen] == ids[chosen]).sum().item() / n
    randomised = 1 - to_mask - kept
    assert to_mask == pytest.approx(0.8, abs=0.01)
    # a random replacement draws the original token 1 time in 95
    assert randomised == pytest.approx(0.1 * 94 / 95, abs=0.01) and kept == pytest.approx(0.1 + 0.1 / 95, abs=0.01)
    assert not special[masked[chosen & (masked != 4)]].any(), "a random replacement was a special token"


def test_whole_word_masking_masks_every_piece_of_a_word_together():
    texts = corpus(200)
    tok = train_tokenizer(texts, TokenizerConfig(kind="wordpiece", vocab_size=60), 24)
    batch = encode(tok, texts, 24)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    continues = continuation_ids(tok)
    assert continues[ids].any(), "the test needs words split into several pieces"
    _, labels = mask_tokens(ids, mask, special_ids(tok), continues, tok.mask_token_id, 0.3, torch.Generator().manual_seed(0))
    chosen = labels != -100
    follows = continues[ids][:, 1:] & mask[:, 1:].bool()  # (B, T-1): a piece continuing the word of the token before it
    assert follows.any()
    assert torch.equal(chosen[:, 1:][follows], chosen[:, :-1][follows]), "a word was masked in part"
    assert 0.2 < chosen.sum() / (mask.sum() - 2 * len(texts)) < 0.6


def tiny_model(vocab_size: int, attention: str = "full") -> SlimformerForSequenceClassification:
    torch.manual_seed(0)
    return SlimformerForSequenceClassification(SlimformerConfig(vocab_size=vocab_size, max_len=24, dim=32, n_layers=2, n_heads=2,
                                                               ffn_dim=64, num_labels=2, dropout=0.0, attention=attention))


@pytest.mark.parametrize("attention", sorted(ATTENTION))
def test_mlm_loss_falls_in_the_training_loop(attention):
    texts = corpus(64)
    tok = train_tokenizer(texts, TokenizerConfig(kind="wordpiece", vocab_size=60), 24)
    batch = encode(tok, texts, 24)
    split = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    special, continues = special_ids(tok), continuation_ids(tok)
    wrapped = MaskedLM(tiny_model(len(tok), attention))
    evaluate = mlm_evaluator(split, special, continues, tok.mask_token_id, 0.15, seed=0)
    before = evaluate(wrapped, type("A", (), {"device": "cpu"})())["val_mlm_loss"]
    cfg = OptimConfig(epochs=8, batch_size=16, lr=5e-3, warmup=0.0, patience=None)
    wrapped, curve = train(wrapped, split, split, cfg, mlm_loss(special, continues, tok.mask_token_id, 0.15, 0), seed=0,
                           device="cpu", evaluate=evaluate, monitor="val_mlm_loss", higher_is_better=False)
    best = min(p["val_mlm_loss"] for p in curve)
    assert best < before - 0.5, (before, curve)  # from uniform over the vocabulary (ln V) towards the corpus statistics
    assert all(0.0 <= p["val_masked_accuracy"] <= 1.0 for p in curve)
    # the best epoch's weights came back (lowest validation loss, not the last epoch)
    assert evaluate(wrapped, type("A", (), {"device": "cpu"})())["val_mlm_loss"] == pytest.approx(best, abs=1e-4)


def test_sparse_prediction_gives_the_dense_logits_of_the_chosen_tokens():
    """The head runs on the chosen tokens only: the same logits there, so the same loss, as over every token."""
    texts = corpus(16)
    tok = train_tokenizer(texts, TokenizerConfig(kind="wordpiece", vocab_size=60), 24)
    batch = encode(tok, texts, 24)
    masked, labels = mask_tokens(batch["input_ids"], batch["attention_mask"], special_ids(tok), continuation_ids(tok),
                                 tok.mask_token_id, 0.3, torch.Generator().manual_seed(0))
    wrapped = MaskedLM(tiny_model(len(tok))).eval()
    with torch.no_grad():
        dense = wrapped(masked, batch["attention_mask"])  # (B, T, V)
        sparse = wrapped(masked, batch["attention_mask"], labels=labels)  # (M, V)
    chosen = labels != -100
    assert sparse.shape == (int(chosen.sum()), len(tok)) and 0 < len(sparse) < chosen.numel()
    torch.testing.assert_close(sparse, dense[chosen], atol=1e-5, rtol=1e-5)


def write_csvs(folder):
    rows = [f"{t},{'pos' if 'cat' in t else 'neg'}" for t in corpus(120, seed=1)]
    for split, part in (("train", rows[:80]), ("validation", rows[80:100]), ("test", rows[100:])):
        (folder / f"{split}.csv").write_text("text,label\n" + "\n".join(part) + "\n")
    (folder / "more.txt").write_text("\n".join(corpus(40, seed=2)) + "\n")


RECIPE = (
    "name: pt\n"
    "task: {kind: files, train: train.csv, validation: validation.csv, test: test.csv, seq_len: 24, "
    "tokenizer: {vocab_size: 80}}\n"
    "teacher: {dim: 32, n_heads: 2, ffn_dim: 64, n_layers: 2}\n"
    "steps:\n"
    "  - {kind: pretrain, corpus: [more.txt], max_steps: 4, batch_size: 16}\n"
    "  - {kind: train, max_steps: 2, lr: 1.0e-9, warmup: 0.0}\n"
)


def test_pretrained_stage_reloads_and_train_fine_tunes_it(tmp_path):
    write_csvs(tmp_path)
    recipe = tmp_path / "pt.yaml"
    recipe.write_text(RECIPE)
    runs = tmp_path / "runs"
    assert cli.main(["run", str(recipe), "--runs-dir", str(runs)]) == 0
    run_dir = runs / "pt"
    register_auto_classes()
    pretrained = AutoModelForSequenceClassification.from_pretrained(run_dir / "stages/pretrained/model")
    teacher = AutoModelForSequenceClassification.from_pretrained(run_dir / "stages/teacher/model")
    assert type(pretrained) is SlimformerForSequenceClassification
    # train started from the pretrained encoder (lr 1e-9: its weights barely moved), not from a fresh one
    for name, weight in pretrained.state_dict().items():
        assert torch.allclose(weight, teacher.state_dict()[name], atol=1e-5), name
    # one vocabulary for both stages: the pretraining tokenizer saw the corpus file's words
    vocab = AutoTokenizer.from_pretrained(run_dir / "stages/pretrained/model").get_vocab()
    assert vocab == AutoTokenizer.from_pretrained(run_dir / "stages/teacher/model").get_vocab()
    stages = {s["name"]: s for s in json.loads((run_dir / "results.json").read_text())["stages"]}
    assert stages["teacher"]["pretrained"] == "pretrained" and stages["pretrained"]["val_mlm_loss"] > 0
    assert {"val_mlm_loss", "val_masked_accuracy"} <= set(stages["pretrained"]["train_curve"][0])
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any(e["stage"] == "pretrained" and "val_masked_accuracy" in e for e in events)

    # the train step's cache key includes the pretraining stage's: a changed pretrain retrains the teacher
    assert cli.main(["run", str(recipe), "--runs-dir", str(runs), "steps.pretrain.mask_prob=0.2"]) == 0
    done = [f"{e['stage']}:{e['kind']}"
            for e in (json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines())
            if e.get("event") == "step_done"]
    assert done == ["pretrained:pretrain", "teacher:train"] * 2


def test_a_variant_pretraining_stays_cached_when_the_trunk_changes(tmp_path):
    """pretrain reads text, not the stage before it: editing the scratch teacher of the trunk retrains neither the
    variant's pretraining nor its fine-tuning (which starts from the pretrained stage)."""
    write_csvs(tmp_path)
    recipe = tmp_path / "pt.yaml"
    recipe.write_text(RECIPE.split("steps:\n")[0] + "steps:\n  - {kind: train, max_steps: 2}\nvariants:\n  mlm:\n"
                      "    - {kind: pretrain, corpus: [more.txt], max_steps: 4, batch_size: 16}\n"
                      "    - {kind: train, max_steps: 2}\n")
    runs = tmp_path / "runs"
    for override in ("steps.teacher.max_steps=2", "steps.teacher.max_steps=3"):
        assert cli.main(["run", str(recipe), "--runs-dir", str(runs), override]) == 0
    done = [f"{e['stage']}:{e['kind']}"
            for e in (json.loads(line) for line in (runs / "pt/metrics.jsonl").read_text().splitlines())
            if e.get("event") == "step_done"]
    assert done == ["teacher:train", "mlm.pretrained:pretrain", "mlm.teacher:train", "teacher:train"]


@pytest.mark.parametrize("content", [None, "", "\n  \n"], ids=["missing", "empty", "blank"])
def test_a_missing_or_empty_corpus_file_is_an_error_naming_it(tmp_path, capsys, content):
    write_csvs(tmp_path)
    (tmp_path / "more.txt").unlink()
    if content is not None:
        (tmp_path / "more.txt").write_text(content)
    recipe = tmp_path / "pt.yaml"
    recipe.write_text(RECIPE)
    assert cli.main(["run", str(recipe), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "more.txt" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists(), "nothing is written before the corpus is checked"


def test_pretrain_must_be_followed_by_train(tmp_path, capsys):
    write_csvs(tmp_path)
    recipe = tmp_path / "pt.yaml"
    recipe.write_text(RECIPE.replace("  - {kind: train, max_steps: 2, lr: 1.0e-9, warmup: 0.0}\n", "  - {kind: export}\n"))
    assert cli.main(["validate", str(recipe)]) == 2
    assert "put a `train` step right after it" in capsys.readouterr().err


# --------------------------------------------------------------------------- continued pretraining of an imported checkpoint


def test_masked_lm_of_an_imported_checkpoint_matches_its_own_mlm_head(tmp_path):
    """MaskedLM around an imported BertForMaskedLM, its head read from the checkpoint, gives the checkpoint's MLM logits."""
    import transformers as tf

    from compress.models.import_hf import import_pretrained, read_mlm_head
    from tests.helpers import padded_batch, tiny_bert_folder

    folder = tiny_bert_folder(tmp_path / "ckpt", mlm=True)
    reference = tf.BertForMaskedLM.from_pretrained(folder).eval()
    wrapped = MaskedLM(import_pretrained(folder, label_names=["a", "b"]).model).eval()
    head, reason = read_mlm_head(folder)
    assert reason == "the checkpoint's masked-LM head"
    wrapped.load_state_dict(wrapped.state_dict() | head)
    ids, mask = padded_batch(3, 12, vocab=reference.config.vocab_size)
    with torch.no_grad():
        ours, theirs = wrapped(ids, mask), reference(input_ids=ids, attention_mask=mask).logits
    real = mask.bool()  # padded positions differ (we never score them)
    assert torch.allclose(ours[real], theirs[real], atol=1e-4), (ours[real] - theirs[real]).abs().max()
    # a bare encoder has no head to read
    assert read_mlm_head(tiny_bert_folder(tmp_path / "bare"))[0] is None


TAPT = """\
name: tapt
task: {kind: files, train: train.csv, seq_len: 16}
teacher: {from: ckpt, pooling: mean}
steps:
  - {kind: pretrain, corpus: [reviews.txt], use_task_texts: false, epochs: 2, batch_size: 16, lr: 1.0e-3}
  - {kind: train, max_steps: 2, lr: 1.0e-9, warmup: 0.0}
"""


def test_pretrain_continues_an_imported_checkpoint_in_its_own_vocabulary(tmp_path):
    from safetensors.torch import load_file

    from compress.models.import_hf import import_pretrained
    from tests.helpers import WORDS, tiny_bert_folder, write_task

    folder = tiny_bert_folder(tmp_path / "ckpt", mlm=True)
    write_task(tmp_path)  # its texts repeat, so the test split holds them all: pretrain on a corpus file
    (tmp_path / "reviews.txt").write_text("\n".join(f"the day was {w} and the movie {v}" for w in WORDS[:8] for v in WORDS[:8]))
    (tmp_path / "tapt.yaml").write_text(TAPT)
    runs = tmp_path / "runs"
    assert cli.main(["run", str(tmp_path / "tapt.yaml"), "--runs-dir", str(runs)]) == 0
    run_dir = runs / "tapt"
    stages = {s["name"]: s for s in json.loads((run_dir / "results.json").read_text())["stages"]}
    pre = stages["pretrained"]
    assert pre["continued_from"] == str(folder) and pre["mlm_head"] == "the checkpoint's masked-LM head"
    assert stages["teacher"]["pretrained"] == "pretrained" and stages["teacher"]["imported"]["family"] == "bert"
    curve = pre["train_curve"]
    assert len(curve) == 2 and curve[-1]["val_mlm_loss"] < curve[0]["train_loss"] + 1.0
    # the checkpoint's vocabulary is kept: no tokenizer was trained
    ckpt_vocab = AutoTokenizer.from_pretrained(folder).get_vocab()
    assert AutoTokenizer.from_pretrained(run_dir / "stages/pretrained/model").get_vocab() == ckpt_vocab
    assert AutoTokenizer.from_pretrained(run_dir / "stages/teacher/model").get_vocab() == ckpt_vocab
    # the encoder started from the checkpoint and moved (2 epochs at lr 1e-3), same shapes
    start = import_pretrained(folder, label_names=["neg", "pos"]).model.state_dict()
    after = load_file(run_dir / "stages/pretrained/model/model.safetensors")
    encoder = [k for k in start if not k.startswith("classifier")]
    assert all(after[k].shape == start[k].shape for k in encoder)
    moved = max((after[k] - start[k]).abs().max().item() for k in encoder)
    assert 0 < moved < 0.1, moved


def test_whole_word_pieces_of_a_byte_level_bpe_vocabulary():
    """RoBERTa's byte-level BPE marks a word start with "Ġ" (a byte-level space): a piece without it continues a word."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4, "Ġthe": 5, "Ġplay": 6, "ing": 7, "ed": 8, ",": 9,
             "the": 10}
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>")),
                                  bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>", mask_token="<mask>")
    continues = continuation_ids(tok)
    assert continues.tolist() == [False] * 7 + [True, True, False, True]
