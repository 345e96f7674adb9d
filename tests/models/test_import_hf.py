"""Importing Hugging Face encoder checkpoints: exact parity with transformers per family, the head and
pooling decisions, save/reload, ONNX export, head pruning, and the errors a user can cause.

Every checkpoint is a tiny random model built here with transformers (dim 32, 2 layers) and saved
with safetensors; its parameters are perturbed so LayerNorms and biases are not 1/0 and a swapped
mapping shows in the numbers. Parity is checked in fp32 on a right-padded batch of mixed lengths.
"""

import copy
import json
import shutil
import string

import pytest
import torch
import transformers as tf
from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerFast

from compress.errors import CheckpointError
from compress.models import SlimformerForSequenceClassification
from compress.models.import_hf import import_pretrained
from tests.helpers import logits

ATOL = 1e-4
SHAPE = {"vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 37,
         "max_position_embeddings": 40}
BERT_SPECIALS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"}
ROBERTA_SPECIALS = {"cls_token": "<s>", "pad_token": "<pad>", "sep_token": "</s>", "unk_token": "<unk>", "mask_token": "<mask>"}
FAMILIES = {  # family -> (config, pad id, tokenizer specials)
    "bert": (lambda: tf.BertConfig(**SHAPE), 0, BERT_SPECIALS),
    # 42 positions, 2 of them before the first real token
    "roberta": (lambda: tf.RobertaConfig(**SHAPE | {"max_position_embeddings": 42}, pad_token_id=1, type_vocab_size=1), 1,
                ROBERTA_SPECIALS),
    "xlm-roberta": (lambda: tf.XLMRobertaConfig(**SHAPE | {"max_position_embeddings": 42}, pad_token_id=1, type_vocab_size=1), 1,
                    ROBERTA_SPECIALS),
    "distilbert": (lambda: tf.DistilBertConfig(vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=37,
                                               max_position_embeddings=40, sinusoidal_pos_embds=True), 0, BERT_SPECIALS),
    # embedding_size != hidden_size (the projection) and gelu_new (our gelu_tanh)
    "electra": (lambda: tf.ElectraConfig(**SHAPE, embedding_size=16, hidden_act="gelu_new"), 0, BERT_SPECIALS),
}


def save_tokenizer(folder, specials: dict[str, str]):
    """A tiny WordPiece tokenizer (specials in the given order, then letters) saved as tokenizer.json."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = [*specials.values(), *string.ascii_lowercase, *("##" + c for c in string.ascii_lowercase)]
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(words)}, unk_token=specials["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, **specials).save_pretrained(folder)


def perturb_(model, seed=0):
    """Random offsets on every parameter: LayerNorm weights off 1, biases off 0, tables changed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model


def batch(pad_id, lengths=(12, 7, 3, 10), vocab=99, seed=0):
    """Right-padded token ids (no pad id among real tokens) and their mask, (len(lengths), max(lengths))."""
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    ids = torch.randint(5, vocab, (len(lengths), T), generator=g)
    mask = (torch.arange(T)[None] < torch.tensor(lengths)[:, None]).long()
    return ids.masked_fill(mask == 0, pad_id), mask


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """family -> (HF classifier in eval mode, its folder, its bare encoder's folder, pad id)."""
    out = {}
    for family, (make, pad, specials) in FAMILIES.items():
        root = tmp_path_factory.mktemp(family)
        config = make()
        config.num_labels = 3
        torch.manual_seed(0)
        hf = perturb_(AutoModelForSequenceClassification.from_config(config, attn_implementation="eager")).eval()
        hf.save_pretrained(root / "cls")
        hf.base_model.save_pretrained(root / "bare")
        for name in ("cls", "bare"):
            save_tokenizer(root / name, specials)
        out[family] = (hf, root / "cls", root / "bare", pad)
    return out


def hidden_diff(hf_encoder, model, ids, mask) -> float:
    """max |HF last hidden state - slimformer encode()| over real tokens."""
    with torch.no_grad():
        theirs = hf_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        ours = model.encode(ids, mask)
    return float((theirs - ours).abs()[mask.bool()].max())


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_classifier_and_encoder_parity(checkpoints, family):
    hf, folder, bare, pad = checkpoints[family]
    ids, mask = batch(pad)
    imported = import_pretrained(folder)
    model, info = imported.model, imported.info
    assert info["family"] == family and info["head"] == "imported" and info["pooling"] == "cls"
    assert not model.training and model.config.norm == "post"
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask).logits
    diff = float((logits(model, ids, mask) - expected).abs().max())
    assert diff <= ATOL, f"{family} logits differ by {diff:.2e}"
    assert hidden_diff(hf.base_model, model, ids, mask) <= ATOL
    assert model.config.max_len == 40 and info["max_len"] == 40  # RoBERTa: 42 positions - (padding_idx + 1)
    assert imported.tokenizer.pad_token_id == pad
    json.dumps(info)  # recordable as is

    # the bare encoder folder (no base-model prefix, no head): same hidden states, a fresh head
    fresh = import_pretrained(bare, label_names=["neg", "pos"])
    assert fresh.info["head"] == "fresh" and fresh.model.config.id2label == {0: "neg", 1: "pos"}
    assert hidden_diff(hf.base_model, fresh.model, ids, mask) <= ATOL


def test_electra_keeps_its_narrow_embeddings(checkpoints):
    model = import_pretrained(checkpoints["electra"][1]).model
    assert model.config.embed_dim == 16 and model.embeddings.tok.weight.shape == (99, 16)
    assert model.embeddings.proj.weight.shape == (32, 16)
    assert model.config.activation == "gelu_tanh" and model.config.head_activation == "gelu"


def test_saves_and_reloads_with_auto_classes(checkpoints, tmp_path):
    _, folder, _, pad = checkpoints["electra"]
    model = import_pretrained(folder).model
    model.save_pretrained(tmp_path / "m")
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "m")
    assert type(loaded) is SlimformerForSequenceClassification
    ids, mask = batch(pad)
    assert torch.equal(logits(model, ids, mask), logits(loaded, ids, mask))


def test_exports_to_onnx_with_parity(checkpoints, tmp_path):
    from compress.onnx.export import check_parity, export_onnx

    _, folder, _, pad = checkpoints["electra"]  # projection, gelu_tanh, dense + gelu head
    model = import_pretrained(folder).model
    ids, mask = batch(pad, lengths=(9, 4, 6))
    export_onnx(model, tmp_path / "model.onnx", (ids, mask))
    report = check_parity(model, tmp_path / "model.onnx", *batch(pad, lengths=(12, 3, 7, 7, 1), seed=1), atol=ATOL)
    assert report["max_abs_diff"] <= ATOL


def test_pruned_heads_equal_zeroed_heads(checkpoints):
    from compress.steps.prune import prune_heads_

    _, folder, _, pad = checkpoints["bert"]
    model = import_pretrained(folder).model
    masked = copy.deepcopy(model)
    plan = {0: [1, 3], 1: [0]}
    with torch.no_grad():  # a head whose out_proj columns are zero adds nothing
        for i, heads in plan.items():
            for h in heads:
                masked.layers[i].attn.out_proj.weight[:, h * 8 : (h + 1) * 8] = 0
    prune_heads_(model, plan)
    assert model.config.n_heads == [2, 3] and model.layers[0].attn.q_proj.weight.shape == (16, 32)
    ids, mask = batch(pad)
    torch.testing.assert_close(logits(model, ids, mask), logits(masked, ids, mask), atol=1e-5, rtol=1e-5)


def test_sentence_transformers_folder_pools_as_it_says(checkpoints, tmp_path):
    """A BertModel folder with modules.json + 1_Pooling (mean) and only vocab.txt: mean pooling, fresh head."""
    hf, _, bare, pad = checkpoints["bert"]
    st = tmp_path / "st"
    st.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(bare / name, st / name)
    (st / "vocab.txt").write_text("\n".join([*BERT_SPECIALS.values(), *string.ascii_lowercase]) + "\n")
    (st / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]))
    (st / "1_Pooling").mkdir()
    pooling = {"word_embedding_dimension": 32, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
               "pooling_mode_max_tokens": False}
    (st / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    imported = import_pretrained(st, label_names=["a", "b", "c"])
    assert imported.info["pooling"] == "mean" and imported.info["pooling_from"] == "1_Pooling/config.json"
    assert imported.model.classifier_dense is None  # a plain linear head on the mean
    assert any("Normalize" in note for note in imported.info["notes"])
    assert imported.tokenizer("ab c")["input_ids"]
    ids, mask = batch(pad)
    assert hidden_diff(hf.base_model, imported.model, ids, mask) <= ATOL
    assert import_pretrained(st, pooling="cls").info["pooling_from"] == "argument"

    max_pooling = pooling | {"pooling_mode_mean_tokens": False, "pooling_mode_max_tokens": True}
    (st / "1_Pooling" / "config.json").write_text(json.dumps(max_pooling))
    with pytest.raises(CheckpointError, match=r"pooling_mode_max_tokens.*pass pooling='mean' or pooling='cls'"):
        import_pretrained(st)


def test_head_decisions(checkpoints):
    hf, folder, bare, _ = checkpoints["bert"]
    kept = import_pretrained(folder, label_names=["x", "y", "z"])
    assert kept.info["head"] == "imported" and kept.model.config.id2label == {0: "x", 1: "y", 2: "z"}
    assert "replaced by label_names ['x', 'y', 'z'], index for index" in kept.info["head_reason"]
    other = import_pretrained(folder, label_names=["x", "y"])
    assert other.info["head"] == "fresh" and "has 3 labels" in other.info["head_reason"]
    assert "pretrained pooler" in other.info["head_reason"]  # BERT: fresh classifier on the pooler
    torch.testing.assert_close(other.model.classifier_dense.weight, hf.bert.pooler.dense.weight)
    mean = import_pretrained(folder, pooling="mean")
    assert mean.info["head"] == "fresh" and mean.model.classifier_dense is None
    again = import_pretrained(bare, label_names=["x", "y"])  # the fresh head is seeded
    assert torch.equal(again.model.classifier.weight, other.model.classifier.weight)


def test_sharded_and_old_layernorm_names(checkpoints, tmp_path):
    from safetensors.torch import load_file, save_file

    hf, folder, _, pad = checkpoints["bert"]
    sharded = tmp_path / "sharded"
    hf.save_pretrained(sharded, max_shard_size="20KB")
    save_tokenizer(sharded, BERT_SPECIALS)
    assert (sharded / "model.safetensors.index.json").is_file() and not (sharded / "model.safetensors").exists()
    old = edited_copy(folder, tmp_path / "old")  # LayerNorm gamma/beta (older uploads), TinyBERT's distillation projections
    weights = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
               for k, v in load_file(folder / "model.safetensors").items()}
    weights |= {"fit_denses.0.weight": torch.zeros(8, 32), "fit_denses.0.bias": torch.zeros(8)}
    save_file(weights, old / "model.safetensors")
    ids, mask = batch(pad)
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask).logits
    for path in (sharded, old):
        got = logits(import_pretrained(path).model, ids, mask)
        assert float((got - expected).abs().max()) <= ATOL, path.name


# --------------------------------------------------------------------------- errors


def edited_copy(src, dst, **config):
    """A copy of checkpoint folder `src` with config.json fields replaced."""
    shutil.copytree(src, dst)
    raw = json.loads((dst / "config.json").read_text()) | config
    (dst / "config.json").write_text(json.dumps(raw))
    return dst


@pytest.mark.parametrize("model_type, arch", [("gpt2", "GPT2LMHeadModel"), ("t5", "T5ForConditionalGeneration")])
def test_unsupported_model_type(tmp_path, model_type, arch):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type, "architectures": [arch]}))
    with pytest.raises(CheckpointError, match=rf"model_type '{model_type}' cannot be imported; supported: bert \(BertModel"):
        import_pretrained(tmp_path)


def test_config_errors(checkpoints, tmp_path):
    folder = checkpoints["bert"][1]
    cases = {
        "arch": ({"architectures": ["BertForQuestionAnswering"]},
                 r"architecture 'BertForQuestionAnswering' cannot be imported; supported"),
        "relative": ({"position_embedding_type": "relative_key"}, r"position_embedding_type 'relative_key' is not supported"),
        "decoder": ({"is_decoder": True}, r"is_decoder is true; slimformer imports bidirectional encoders"),
        "act": ({"hidden_act": "quick_gelu"}, r"hidden_act 'quick_gelu' is not supported"),
    }
    for name, (fields, message) in cases.items():
        with pytest.raises(CheckpointError, match=message):
            import_pretrained(edited_copy(folder, tmp_path / name, **fields))
    with pytest.raises(CheckpointError, match="does not exist"):
        import_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="has no config.json"):
        import_pretrained(tmp_path / "empty")


def test_file_errors(checkpoints, tmp_path):
    folder = checkpoints["bert"][1]
    binary = edited_copy(folder, tmp_path / "bin")
    (binary / "model.safetensors").rename(binary / "pytorch_model.bin")
    convert = r"weights only as \['pytorch_model.bin'\].*save_pretrained\(.*safe_serialization=True\)"
    with pytest.raises(CheckpointError, match=convert):
        import_pretrained(binary)
    no_tok = edited_copy(folder, tmp_path / "notok")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (no_tok / name).unlink()
    with pytest.raises(CheckpointError, match=r"has no tokenizer: add the checkpoint's tokenizer files \(one of tokenizer.json"):
        import_pretrained(no_tok)


def test_unmapped_and_missing_weights_are_named(checkpoints, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = checkpoints["distilbert"][1]
    weights = load_file(folder / "model.safetensors")
    extra = edited_copy(folder, tmp_path / "extra")
    save_file(weights | {"distilbert.transformer.layer.0.attention.rel_bias": torch.zeros(4)}, extra / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"weights \['transformer.layer.0.attention.rel_bias'\] \(1 in all\) have no place"):
        import_pretrained(extra)
    missing = edited_copy(folder, tmp_path / "missing")
    save_file({k: v for k, v in weights.items() if "layer.1.ffn.lin2.bias" not in k}, missing / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"lacks \['transformer.layer.1.ffn.lin2.bias'\]"):
        import_pretrained(missing)
