"""Batches: padding trimmed, length-grouped and sharded samplers, and batched prediction in split order.

What every step that trains or scores a torch model shares (the training loop, distillation,
recovery, importance scores, export's parity inputs, quantization's calibration): a split is a
dict of same-length tensors (`input_ids` (N, T), `attention_mask` (N, T), `labels` (N,), extras
such as `teacher_logits`), padded to the task's seq_len; a batch is trimmed to its longest row.
Length grouping is the "bucketing" of fairseq and AllenNLP.
"""

import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler


def trim(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop padding columns past the longest real sequence of the batch: (B, T) -> (B, T')."""
    length = max(int(attention_mask.sum(dim=1).max()), 1)
    return input_ids[:, :length], attention_mask[:, :length]


@torch.no_grad()
def predict(model, split: dict, batch_size: int = 256, device: str | torch.device = "cpu") -> torch.Tensor:
    """Logits (N, n_classes) of `model` on an encoded split, in eval mode, in the split's order.

    Examples are batched by length (longest first) and each batch trimmed to its longest, so a
    split of short texts padded to a long seq_len costs what its tokens cost (2-3x less on
    natural text than batches in split order)."""
    was_training = model.training
    model.eval()
    order = torch.argsort(split["attention_mask"].sum(dim=1), descending=True, stable=True)  # (N,)
    out = torch.empty(0)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        ids, mask = trim(split["input_ids"][rows], split["attention_mask"][rows])
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float().cpu()  # (b, n_classes)
        if out.numel() == 0:
            out = logits.new_empty((len(order), logits.shape[-1]))
        out[rows] = logits
    model.train(was_training)
    return out


class LengthGroupedBatches(torch.utils.data.Sampler):
    """Shuffled batches of examples of similar length.

    Each epoch: a seeded permutation is cut into pools of `pool` batches, each pool is sorted by
    length and cut into batches, and the batch order is shuffled. Every example is seen once per
    epoch as with plain shuffling, but batches are trimmed to their own longest example, which
    on natural text cuts the padded tokens by 2-3x (the "bucketing" of fairseq and AllenNLP).
    """

    def __init__(self, lengths: torch.Tensor, batch_size: int, seed: int, pool: int = 50):
        self.lengths, self.batch_size, self.seed, self.pool = lengths, batch_size, seed, pool
        self.epoch = 0

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        self.epoch += 1
        order = torch.randperm(len(self.lengths), generator=g)
        batches = []
        for start in range(0, len(order), self.batch_size * self.pool):
            chunk = order[start : start + self.batch_size * self.pool]
            chunk = chunk[torch.argsort(self.lengths[chunk], descending=True, stable=True)]
            batches += [chunk[i : i + self.batch_size].tolist() for i in range(0, len(chunk), self.batch_size)]
        for i in torch.randperm(len(batches), generator=g).tolist():
            yield batches[i]

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)


class ShardedBatches(torch.utils.data.Sampler):
    """One process's share of every batch: examples rank, rank + n, rank + 2n, ...

    Every process draws the same seeded batches, so they all take the same number of steps;
    a length-grouped batch is sorted by length, so the strided shares are alike in length.
    """

    def __init__(self, batches, rank: int, n_processes: int):
        self.batches, self.rank, self.n = batches, rank, n_processes

    def __iter__(self):
        for batch in self.batches:
            if len(batch) < self.n:  # a last batch smaller than the process count: repeat examples, none goes empty
                batch = (batch * self.n)[: self.n]
            yield batch[self.rank :: self.n]

    def __len__(self) -> int:
        return len(self.batches)


def make_loader(split: dict, cfg, seed: int, rank: int = 0, n_processes: int = 1) -> DataLoader:
    """Batches of every tensor in `split` (input_ids, attention_mask, labels, and extras such as teacher_logits),
    per `cfg`'s `batch_size` and `group_by_length` (an OptimConfig).

    With several processes each gets its share of every batch (`ShardedBatches`).
    """
    keys = [k for k, v in split.items() if isinstance(v, torch.Tensor)]
    dataset = KeyedTensors({k: split[k] for k in keys})
    g = torch.Generator().manual_seed(seed)
    if cfg.group_by_length:
        batches = LengthGroupedBatches(split["attention_mask"].sum(dim=1), cfg.batch_size, seed)
    else:
        batches = BatchSampler(RandomSampler(dataset, generator=g), cfg.batch_size, drop_last=False)
    if n_processes > 1:
        batches = ShardedBatches(batches, rank, n_processes)
    # the loader draws a seed from g each epoch too, so the order is that of DataLoader(shuffle=True, generator=g)
    return DataLoader(dataset, batch_sampler=batches, generator=g, collate_fn=dataset.collate)


class KeyedTensors(torch.utils.data.Dataset):
    """Rows of several same-length tensors, batched into a dict with padding trimmed."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors["input_ids"])

    def __getitem__(self, i: int) -> int:
        return i

    def collate(self, indices: list[int]) -> dict[str, torch.Tensor]:
        index = torch.tensor(indices)
        batch = {k: v[index] for k, v in self.tensors.items()}
        batch["input_ids"], batch["attention_mask"] = trim(batch["input_ids"], batch["attention_mask"])
        return batch


