"""The training loop's helpers: prediction in the split's order, whatever the batching."""

import torch

from compress.models import SlimformerConfig, SlimformerForSequenceClassification
from compress.train import predict


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
        alone = torch.cat([model.eval()(input_ids=ids[i : i + 1, : lengths[i]], attention_mask=mask[i : i + 1, : lengths[i]]).logits
                           for i in range(37)])
    torch.testing.assert_close(got, alone, atol=1e-5, rtol=1e-5)
