"""The training loop's helpers: prediction in the split's order, whatever the batching."""

import torch

from compress.models import SlimformerConfig, SlimformerForSequenceClassification
from compress.training.batches import predict


def test_predict_batches_by_length_and_returns_the_split_order():
    torch.manual_seed(0)
    config = SlimformerConfig(vocab_size=50, max_len=20, dim=16, n_layers=1, n_heads=2, ffn_dim=32, num_labels=3, dropout=0.0)
    model = SlimformerForSequenceClassification(config)
    ids = torch.randint(5, 50, (37, 20))
    lengths = torch.randint(3, 21, (37,))
    mask = (torch.arange(20)[None] < lengths[:, None]).long()
    got = predict(model.train(), {"input_ids": ids, "attention_mask": mask}, batch_size=8)
    assert model.training, "predict restores the mode it found"
    with torch.no_grad():
        alone = torch.cat([model.eval()(input_ids=ids[i : i + 1, : lengths[i]],
                                        attention_mask=mask[i : i + 1, : lengths[i]]).logits
                           for i in range(37)])
    torch.testing.assert_close(got, alone, atol=1e-5, rtol=1e-5)


def test_head_lr_gives_the_classifier_its_own_learning_rate_and_vectors_never_decay():
    from compress.training.loop import OptimConfig, param_groups

    config = SlimformerConfig(vocab_size=50, max_len=20, dim=16, n_layers=1, n_heads=2, ffn_dim=32, num_labels=3,
                              head_activation="tanh")
    model = SlimformerForSequenceClassification(config)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = param_groups(model, OptimConfig(lr=1e-4, head_lr=3e-3, weight_decay=0.1))
    assert sum(len(g["params"]) for g in groups) == len(names)
    for g in groups:
        for p in g["params"]:
            head = names[id(p)].startswith("classifier")  # classifier and classifier_dense
            assert g["lr"] == (3e-3 if head else 1e-4), names[id(p)]
            assert g["weight_decay"] == (0.1 if p.ndim >= 2 else 0.0), names[id(p)]
    # without head_lr every group has `lr`: the two groups of before
    plain = param_groups(model, OptimConfig(lr=1e-4, weight_decay=0.1))
    assert len(plain) == 2 and {g["lr"] for g in plain} == {1e-4}
