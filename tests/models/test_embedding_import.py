"""A sentence-transformers model imported as an embedding model computes what sentence-transformers computes.

The checkpoint is a tiny random BERT laid out as a sentence-transformers folder (tests/helpers.py); the
reference is sentence-transformers itself on that folder, on padded batches of texts of different lengths.
"""

import pytest
import torch
from sentence_transformers import SentenceTransformer

from compress.errors import CheckpointError
from compress.models.import_hf import import_pretrained
from tests.helpers import tiny_sentence_transformer

TEXTS = ["the movie was good", "a bad day", "very very poor and sad, not a great movie at all", "fine"]


@pytest.mark.parametrize("pooling, normalize", [("mean", True), ("cls", False)])
def test_imported_embeddings_equal_sentence_transformers(tmp_path, pooling, normalize):
    folder = tiny_sentence_transformer(tmp_path / "st", pooling=pooling, normalize=normalize)
    imported = import_pretrained(folder, embedding=True)
    assert imported.info["embedding"] == {"dim": 32, "pooling": pooling, "normalize": normalize, "max_seq_length": 32}
    reference = SentenceTransformer(str(folder), device="cpu").encode(TEXTS, convert_to_tensor=True)
    batch = imported.tokenizer(TEXTS, padding=True, return_tensors="pt")  # padded: the short texts carry pads
    assert batch["attention_mask"].sum(1).min() < batch["attention_mask"].shape[1]
    with torch.no_grad():
        ours = imported.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert ours.shape == (len(TEXTS), 32)
    assert (ours - reference).abs().max() <= 1e-5
    if normalize:
        assert torch.allclose(ours.norm(dim=-1), torch.ones(len(TEXTS)), atol=1e-6)


def test_modules_slimformer_does_not_compute_are_refused(tmp_path):
    import json

    folder = tiny_sentence_transformer(tmp_path / "st")
    modules = json.loads((folder / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(CheckpointError, match="Dense"):
        import_pretrained(folder, embedding=True)
