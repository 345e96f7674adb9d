"""BigBird-style block-sparse attention (Zaheer et al. 2020, "Big Bird: Transformers for Longer Sequences").

The sequence is cut into blocks of `block` tokens (the last block padded inside the module).
Each query block attends to
  - `n_global` global blocks (the first blocks of the sequence, BigBird's ITC variant), whose
    queries in turn attend to every key;
  - a sliding window of `window` blocks centred on itself (3 = itself and one on each side);
  - `n_random` random blocks, fixed per layer by `seed`, so export and reloads are deterministic.
The key and value blocks are gathered (`index_select`, ONNX Gather) into a (K * block)-key band
per query block, K = n_global + window + n_random: no dense T x T matrix is ever formed, so
time and memory grow linearly with T. A slot that falls outside the sequence or repeats a block
already attended (a window block that is also global, a random block inside the window or
global) is masked, so each key counts once; with a window covering every block the result is
exactly full attention. Random blocks are shared by the heads of a layer.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .attention_common import MASKED, add_projections, key_mask, merge_heads, project_qkv
from .attention_registry import register_attention

RANDOM_ROWS = 4096  # query blocks with their own random draw; the pattern repeats after this many


@register_attention("bigbird")
class BigBirdAttention(nn.Module):
    def __init__(
        self,
        dim: int,
        n_heads: int,
        head_dim: int,
        dropout: float = 0.0,
        block: int = 64,
        window: int = 3,
        n_global: int = 1,
        n_random: int = 2,
        seed: int = 0,
    ):
        super().__init__()
        if block < 1 or n_global < 0 or n_random < 0:
            raise ValueError(f"bigbird needs block >= 1, n_global >= 0, n_random >= 0; got {block=}, {n_global=}, {n_random=}")
        if window < 1 or window % 2 == 0:
            raise ValueError(f"bigbird window is a count of blocks centred on the query block: give an odd number >= 1, got {window}")
        add_projections(self, dim, n_heads, head_dim)
        self.dropout, self.block, self.window, self.n_global, self.n_random, self.seed = dropout, block, window, n_global, n_random, seed
        g = torch.Generator().manual_seed(seed)
        # (RANDOM_ROWS, n_random) raw draws: query block i takes row i mod RANDOM_ROWS, each mod n_blocks.
        # Saved in the state dict, so a reloaded model uses exactly the layout it was trained with.
        self.register_buffer("random_blocks", torch.randint(0, 2**30, (RANDOM_ROWS, n_random), generator=g))

    @property
    def n_heads(self) -> int:
        return self.q_proj.out_features // self.head_dim

    def layout(self, blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Key-block index per (query block, slot) and whether that slot counts, both (n_blocks, K), from `blocks` = arange(n_blocks)."""
        device = blocks.device
        count = blocks[-1:] + 1  # (1,) n_blocks as a tensor: the ONNX exporter needs tensor operands for % and clamp
        half = self.window // 2
        window = blocks[:, None] + torch.arange(-half, half + 1, device=device)[None, :]  # (nb, window)
        parts = [window]
        valid = [(window >= self.n_global) & (window < count)]  # inside, and not a global block again
        if self.n_global:
            glob = torch.arange(self.n_global, device=device)[None, :].expand(blocks.shape[0], -1)  # (nb, n_global)
            parts.insert(0, glob)
            valid.insert(0, glob < count)
        if self.n_random:
            rand = self.random_blocks[blocks % RANDOM_ROWS] % count  # (nb, n_random)
            ok = (rand >= self.n_global) & ((rand - blocks[:, None]).abs() > half)  # not global, not in the window
            # and not a repeat of an earlier random slot
            fresh = [ok[:, 0]] + [ok[:, j] & (rand[:, :j] != rand[:, j : j + 1]).all(dim=1) for j in range(1, self.n_random)]
            parts.append(rand)
            valid.append(torch.stack(fresh, dim=1))
        index = torch.minimum(torch.cat(parts, dim=1).clamp(min=0), count - 1)  # (nb, K)
        return index, torch.cat(valid, dim=1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        b, d, H, device = self.block, self.head_dim, self.n_heads, x.device
        starts = torch.arange(0, T, b, device=device)  # (nb,) first position of each block; the last block is padded
        n_blocks = starts.shape[0]
        q, k, v = project_qkv(self, x)  # (B, H, T, d)
        q = q * d**-0.5  # scaled here: T * d multiplies instead of T * K * b
        real = key_mask(mask, x)  # (B, T)
        # Blocks are gathered by position (ONNX Gather), never padded and sliced: no shape depends on
        # both T and n_blocks * b, so the exporter needs no guard on T mod block.
        last = torch.arange(T, device=device)[-1:]  # (1,) T - 1 as a tensor
        index, valid = self.layout(starts // b)  # (nb, K)
        Kb = index.shape[1] * b  # keys per query block
        slot = torch.arange(Kb, device=device)  # (K * b,) key slot within a query block's band
        key_pos = index.index_select(1, slot // b) * b + slot % b  # (nb, K * b)
        allowed = valid.index_select(1, slot // b) & (key_pos <= last)  # the slot counts and is not past the end
        key_pos = torch.minimum(key_pos, last).reshape(-1)  # (nb * K * b,)
        kg = k.index_select(2, key_pos).view(B, H, n_blocks, Kb, d)  # (B, H, nb, K * b, d): each query block's band
        vg = v.index_select(2, key_pos).view(B, H, n_blocks, Kb, d)
        allowed = real.index_select(1, key_pos).view(B, n_blocks, Kb) & allowed  # (B, nb, K * b)
        bias = torch.where(allowed, 0.0, MASKED)[:, None, :, None, :]  # (B, 1, nb, 1, K * b): additive mask
        query_pos = starts[:, None] + torch.arange(b, device=device)  # (nb, b)
        qb = q.index_select(2, torch.minimum(query_pos, last).reshape(-1)).view(B, H, n_blocks, b, d)  # padding repeats the last query
        p = F.dropout((qb @ kg.transpose(-1, -2) + bias).softmax(dim=-1), self.dropout, self.training)  # (B, H, nb, b, K * b)
        rows = torch.arange(T, device=device)  # (T,)
        y = (p @ vg)[:, :, rows // b, rows % b]  # (B, H, T, d)

        if self.n_global:  # global queries attend to every key: (B, H, n_global * b, T), linear in T
            n = self.n_global * b
            gq = q.index_select(2, torch.minimum(torch.arange(n, device=device), last))  # (B, H, n, d)
            gbias = torch.where(real, 0.0, MASKED)[:, None, None, :]  # (B, 1, 1, T)
            gp = F.dropout((gq @ k.transpose(-1, -2) + gbias).softmax(dim=-1), self.dropout, self.training)
            gy = (gp @ v).index_select(2, rows.clamp(max=n - 1))  # (B, H, T, d)
            y = torch.where((rows < n)[None, None, :, None], gy, y)
        return self.out_proj(merge_heads(y))
