"""optimum loads a slimformer ONNX folder: the published transformers-5 fork of optimum-onnx (`optimum-onnx-naf`),
`ORTModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)`, gives the artifact's own ONNX
Runtime logits and runs in a transformers `pipeline("text-classification")` (docs/onnx-artifacts.md)."""

import numpy as np
import torch
from optimum.onnxruntime import ORTModelForSequenceClassification
from transformers import PreTrainedTokenizerFast, pipeline

from compress.data import encode
from compress.data.tokenizer import TokenizerConfig, train_tokenizer
from compress.models import SlimformerConfig, SlimformerForSequenceClassification
from compress.onnx.export import ExportOptions, export_stage
from eval.accuracy import predict_onnx

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "the bird sang", "a fish swam far away in the sea"]


def test_optimum_loads_the_onnx_folder_with_the_artifacts_logits(tmp_path):
    tokenizer = train_tokenizer(TEXTS * 5, TokenizerConfig(kind="wordpiece", vocab_size=60), seq_len=16)
    config = SlimformerConfig(vocab_size=len(tokenizer), max_len=16, dim=32, n_layers=2, n_heads=2, ffn_dim=64, num_labels=3,
                              id2label={0: "animal", 1: "place", 2: "thing"}, label2id={"animal": 0, "place": 1, "thing": 2})
    torch.manual_seed(0)
    model = SlimformerForSequenceClassification(config).eval()
    batch = encode(tokenizer, TEXTS, 16)
    folder = tmp_path / "onnx"
    export_stage(model, tokenizer, folder, (batch["input_ids"], batch["attention_mask"]), ExportOptions())

    ort_model = ORTModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)
    served = PreTrainedTokenizerFast.from_pretrained(folder)
    inputs = served(TEXTS, padding=True, truncation=True, return_tensors="np")  # model_max_length: the export's length
    got = ort_model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    expected = predict_onnx(folder / "model.onnx", inputs["input_ids"], inputs["attention_mask"], threads=1)
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5)

    classify = pipeline("text-classification", model=ort_model, tokenizer=served)
    labels = [row["label"] for row in classify(TEXTS, truncation=True)]
    assert labels == [config.id2label[i] for i in expected.argmax(-1)]
