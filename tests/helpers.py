"""Plain helpers shared by test modules (`from tests.helpers import ...`); fixtures live in conftest.py."""

import torch


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
