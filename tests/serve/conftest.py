"""A tiny exported ONNX folder, laid out as the `export` step writes it: model.onnx, config.json, tokenizer.

The model is embedding -> masked mean -> linear (3 classes), exported with the TorchScript
exporter (well under a second); the tokenizer is a word-level `tokenizers` tokenizer adding
[CLS] ... [SEP], saved with `save_pretrained`. Built once per test session (per xdist worker).
"""

import json
from pathlib import Path

import pytest
import torch

WORDS = ["good", "great", "fine", "nice", "bad", "awful", "poor", "sad", "the", "movie", "was", "very", "not", "a", "day",
         "dog", "cat", "tree", "red", "blue"]
LABELS = ["negative", "neutral", "positive"]
SEQ_LEN = 16  # the model's positions: texts are read to 16 tokens, and cut at 32 x 16 = 512 characters


class MeanPool(torch.nn.Module):
    def __init__(self, vocab_size: int, dim: int = 8, n_classes: int = len(LABELS)):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab_size, dim)
        self.head = torch.nn.Linear(dim, n_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids)  # (B, T, dim)
        mask = attention_mask.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        return self.head((x * mask).sum(1) / mask.sum(1).clamp(min=1.0))  # (B, C)


def build_onnx_folder(folder: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    folder.mkdir(parents=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {w: i for i, w in enumerate(specials + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                            mask_token="[MASK]", model_max_length=SEQ_LEN).save_pretrained(folder)
    torch.manual_seed(0)
    model = MeanPool(len(vocab)).eval()
    ids = torch.randint(5, len(vocab), (2, 8))
    axes = {"input_ids": {0: "batch", 1: "seq_len"}, "attention_mask": {0: "batch", 1: "seq_len"}, "logits": {0: "batch"}}
    torch.onnx.export(model, (ids, torch.ones_like(ids)), str(folder / "model.onnx"), dynamo=False, dynamic_axes=axes,
                      input_names=["input_ids", "attention_mask"], output_names=["logits"])
    config = {"model_type": "slimformer", "max_len": SEQ_LEN, "id2label": dict(enumerate(LABELS))}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="session")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_onnx_folder(tmp_path_factory.mktemp("serve") / "onnx")


@pytest.fixture(scope="session")
def texts() -> list[str]:
    """Sentences of 1 to 12 words (lengths mixed, so sorting by length reorders them), two with unknown words."""
    g = torch.Generator().manual_seed(1)
    out = [" ".join(WORDS[i] for i in torch.randint(0, len(WORDS), (int(n),), generator=g).tolist())
           for n in torch.randint(1, 13, (60,), generator=g)]
    return out + ["zebra crossing", ""]
