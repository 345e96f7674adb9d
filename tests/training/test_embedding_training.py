"""Embedding-mode training pieces (compress/training/embedding.py): the distillation loss is 0 at student = teacher
and positive otherwise; the validation score is the mean cosine with the teacher; the Taylor probe has gradients
where the loss against the model's own output has none."""

import copy

import pytest
import torch

from compress.models import SlimformerConfig, SlimformerForSequenceClassification
from compress.training.embedding import (
    EmbeddingLoss,
    embedding_distillation_loss,
    embedding_loss,
    probe_loss,
    val_score,
    validation,
)
from tests.helpers import padded_batch


@pytest.fixture
def encoder():
    torch.manual_seed(0)
    config = SlimformerConfig(vocab_size=60, max_len=24, dim=32, n_layers=2, n_heads=4, ffn_dim=64, dropout=0.0,
                              embedding_dim=32, normalize=True)
    return SlimformerForSequenceClassification(config).eval()


@pytest.mark.parametrize("weights", [{"mse": 1.0, "cosine": 0.0}, {"mse": 0.0, "cosine": 1.0}, {"mse": 1.0, "cosine": 1.0}])
def test_the_embedding_loss_is_zero_when_the_student_is_the_teacher(encoder, weights):
    ids, mask = padded_batch(6, 12)
    cfg = EmbeddingLoss(**weights)
    loss_fn = embedding_distillation_loss(encoder, cfg)
    loss, emb = loss_fn(copy.deepcopy(encoder), {"input_ids": ids, "attention_mask": mask})
    assert emb.shape == (6, 32) and float(loss) <= 1e-10
    other = copy.deepcopy(encoder)
    with torch.no_grad():
        other.layers[0].mlp.up_proj.weight.mul_(3.0)
    loss, _ = loss_fn(other, {"input_ids": ids, "attention_mask": mask})
    assert float(loss) > 1e-4


def test_mse_of_unit_vectors_is_twice_the_cosine_loss():
    s, t = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1), torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    mse = embedding_loss(s, t, EmbeddingLoss(mse=1.0, cosine=0.0))
    cos = embedding_loss(s, t, EmbeddingLoss(mse=0.0, cosine=1.0))
    assert torch.allclose(mse, 2 * cos, atol=1e-6)


def test_validation_is_the_mean_cosine_with_the_teacher(encoder):
    ids, mask = padded_batch(8, 10)
    split = {"input_ids": ids, "attention_mask": mask, "labels": torch.zeros(8, dtype=torch.long)}
    assert val_score(encoder, copy.deepcopy(encoder), split) == pytest.approx(1.0, abs=1e-6)
    kwargs = validation(encoder, split)
    assert kwargs["monitor"] == "val_cosine"

    class Accelerator:
        device = "cpu"

    assert kwargs["evaluate"](encoder, Accelerator())["val_cosine"] == pytest.approx(1.0, abs=1e-6)


def test_the_probe_has_a_gradient_where_the_loss_against_itself_has_none(encoder):
    ids, mask = padded_batch(4, 10)
    weight = encoder.layers[0].mlp.up_proj.weight
    out = encoder(input_ids=ids, attention_mask=mask).logits
    (grad,) = torch.autograd.grad(embedding_loss(out, out.detach(), EmbeddingLoss()), [weight], retain_graph=True)
    assert grad.abs().max() == 0
    (grad,) = torch.autograd.grad(probe_loss(out, seed=0), [weight])
    assert grad.abs().max() > 0
