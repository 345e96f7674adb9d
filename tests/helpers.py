"""Plain helpers shared by test modules (`from tests.helpers import ...`); fixtures live in conftest.py."""

import torch


class FakeTokenizer:
    """Stands in for a tokenizer where only `save_pretrained` is called (export writes it beside the model)."""

    def save_pretrained(self, folder):
        (folder / "tokenizer.json").write_text("{}")


def padded_batch(n: int, seq_len: int, seed: int = 0, vocab: int = 60) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded token ids in [5, vocab) and their mask, both (n, seq_len); example 0 is padded from seq_len // 2."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (n, seq_len), generator=g)
    mask = torch.ones_like(ids)
    mask[0, seq_len // 2 :] = 0
    ids[mask == 0] = 0
    return ids, mask


def logits(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The model's logits (n, n_classes) in eval mode, without gradients."""
    with torch.no_grad():
        return model.eval()(input_ids=ids, attention_mask=mask).logits


def remote_code_logits(folder, ids: torch.Tensor, mask: torch.Tensor, work) -> torch.Tensor:
    """Logits of the saved model in `folder`, loaded with trust_remote_code=True in a fresh process
    where slimformer cannot be imported: what a user without slimformer gets. `work` holds the files."""
    import os
    import subprocess
    import sys

    torch.save({"ids": ids, "mask": mask}, work / "inputs.pt")
    script = (
        "import sys, torch\n"
        "sys.modules['compress'] = None  # slimformer is not importable here\n"
        "from transformers import AutoModelForSequenceClassification\n"
        f"d = torch.load({str(work / 'inputs.pt')!r})\n"
        f"m = AutoModelForSequenceClassification.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()\n"
        "assert 'transformers_modules' in type(m).__module__, type(m).__module__\n"
        "torch.save(m(input_ids=d['ids'], attention_mask=d['mask']).logits.detach(), sys.argv[1])\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(work / "modules"), "PYTHONPATH": ""}
    subprocess.run([sys.executable, "-c", script, str(work / "out.pt")], check=True, cwd=work, env=env, timeout=300)
    return torch.load(work / "out.pt")


WORDS = ["good", "great", "fine", "nice", "bad", "awful", "poor", "sad", "the", "movie", "was", "very", "not", "a", "day"]


def tiny_bert_folder(folder, n_labels: int | None = None, seed: int = 0, mlm: bool = False):
    """A tiny random BERT checkpoint as a user brings it: config.json + model.safetensors + a WordPiece
    tokenizer.json that adds [CLS] ... [SEP] (specials, the WORDS, letters and ## letters).
    `n_labels`: a BertForSequenceClassification with that many labels; `mlm`: a BertForMaskedLM
    (with its masked-LM head); else a bare BertModel."""
    import string
    from pathlib import Path

    import transformers as tf
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    folder = Path(folder)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = specials + WORDS + list(string.ascii_lowercase) + ["##" + c for c in string.ascii_lowercase]
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tf.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                               sep_token="[SEP]", mask_token="[MASK]").save_pretrained(folder)
    config = tf.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=48, max_position_embeddings=40)
    torch.manual_seed(seed)
    if n_labels:
        config.num_labels = n_labels
        model = tf.BertForSequenceClassification(config)
    elif mlm:
        model = tf.BertForMaskedLM(config)
    else:
        model = tf.BertModel(config)
    model.save_pretrained(folder)
    return folder


def tiny_sentence_transformer(folder, pooling: str = "mean", normalize: bool = True, seed: int = 0):
    """`tiny_bert_folder` laid out as a sentence-transformers model: modules.json (Transformer, Pooling, and Normalize
    when `normalize`), 1_Pooling/config.json (mean or cls) and sentence_bert_config.json (max_seq_length 32)."""
    import json

    folder = tiny_bert_folder(folder, seed=seed)
    st = "sentence_transformers.models"
    modules = [{"idx": 0, "name": "0", "path": "", "type": f"{st}.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": f"{st}.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": f"{st}.Normalize"})
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, "pooling_mode_mean_tokens":
                                                                  pooling == "mean", "pooling_mode_cls_token": pooling == "cls"}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 32, "do_lower_case": False}))
    return folder


POSITIVE, NEGATIVE = WORDS[:4], WORDS[4:8]


def write_task(folder):
    """train.csv of 120 two-class texts in the WORDS vocabulary (tiny_bert_folder's tokenizer)."""
    rows = []
    for i in range(120):
        words = POSITIVE if i % 2 else NEGATIVE
        rows.append(f"the movie was {words[i % 4]} {words[(i // 2) % 4]},{'pos' if i % 2 else 'neg'}")
    (folder / "train.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
