"""FLOPs per call of our model kinds, counted from the config: the numerator of the roofline column.

A count is 2 FLOPs per multiply-add of every matrix product the forward pass executes
(Linear layers, attention's batched products, RNN gate products), as the model code runs it:
BigBird's padded last block and masked band slots, Linformer's k projected rows and
Performer's feature maps all count because they are computed. Elementwise work (softmax,
LayerNorm, GELU, masking, pooling) and embedding lookups are left out: they are O(B T dim),
a few percent of the products at our widths, and move memory rather than use the MatMul
units the peak (`eval/peak.py`) measures. An int8 artifact executes the same products, so it
has the same count (integer operations then).

Input is a config *dict* (`model.config.to_dict()` or a stage's `config.json`), so this module
imports nothing of the library (eval never imports compress). Dispatch is by `model_type`
("slimformer", "slimformer_rnn") and, per layer, by attention `kind`, through registries.
"""

import math
from collections.abc import Callable

from eval.errors import SlimformerError

MODELS: dict[str, Callable[[dict, int, int], int]] = {}  # model_type -> flops(config, batch, seq_len)
ATTENTION: dict[str, Callable[..., int]] = {}  # attention kind -> flops of its core (between the projections)


def register(table: dict, name: str):
    """Decorator: put the function in `table` under `name`, return it unchanged."""

    def decorator(fn):
        table[name] = fn
        return fn

    return decorator


def count_flops(config: dict, batch: int, seq_len: int) -> int:
    """FLOPs of one forward call on a (batch, seq_len) input; SlimformerError for a model type we cannot count."""
    kind = config.get("model_type")
    if kind not in MODELS:
        raise SlimformerError(f"cannot count FLOPs of model_type {kind!r}; counted kinds: {sorted(MODELS)}")
    return int(MODELS[kind](config, batch, seq_len))


def flops_grid(config: dict, batch_sizes: list[int], seq_lens: list[int]) -> list[dict] | None:
    """`[{batch, seq_len, flops}]` over a bench grid (results.json stage `flops`); None when the kind is not counted."""
    if config.get("model_type") not in MODELS:
        return None
    return [{"batch": b, "seq_len": t, "flops": count_flops(config, b, t)} for b in batch_sizes for t in seq_lens]


def n_classes(config: dict) -> int:
    return int(config.get("num_labels") or len(config.get("id2label") or {}) or 2)


def per_layer(value, n_layers: int) -> list:
    return list(value) if isinstance(value, list) else [value] * n_layers


def linear(tokens: int, fan_in: int, fan_out: int) -> int:
    """A Linear on `tokens` rows: (tokens, fan_in) @ (fan_in, fan_out)."""
    return 2 * tokens * fan_in * fan_out


@register(MODELS, "slimformer")
def transformer_flops(config: dict, batch: int, seq_len: int) -> int:
    """Embedding projection, each layer's q/k/v/out projections + attention core + MLP, the head."""
    B, T, dim, L = batch, seq_len, config["dim"], config["n_layers"]
    heads, ffn = per_layer(config["n_heads"], L), per_layer(config["ffn_dim"], L)
    specs = [{"kind": a} if isinstance(a, str) else a for a in per_layer(config.get("attention") or "full", L)]
    head_dim = config.get("head_dim") or dim // max(heads[0], 1)
    total = linear(B * T, config["embed_dim"], dim) if config.get("embed_dim") else 0
    for h, f, spec in zip(heads, ffn, specs, strict=True):
        if h:
            inner = h * head_dim
            total += 3 * linear(B * T, dim, inner) + linear(B * T, inner, dim)  # q, k, v, out
            kind = spec["kind"]
            if kind not in ATTENTION:
                raise SlimformerError(f"cannot count FLOPs of attention kind {kind!r}; counted kinds: {sorted(ATTENTION)}")
            total += ATTENTION[kind](B, T, h, head_dim, **{k: v for k, v in spec.items() if k != "kind"})
        if f:
            total += linear(B * T, dim, f) + linear(B * T, f, dim)  # up, down
    width = dim
    if config.get("head_activation"):
        width = config.get("classifier_dim") or dim
        total += linear(B, dim, width)  # classifier_dense on the pooled vector
    return total + linear(B, width, n_classes(config))


@register(ATTENTION, "full")
def full_flops(B: int, T: int, h: int, d: int, **_) -> int:
    """Q K^T (B, h, T, T) and P V (B, h, T, d): 2 * 2 B h T^2 d."""
    return 4 * B * h * T * T * d


@register(ATTENTION, "linformer")
def linformer_flops(B: int, T: int, h: int, d: int, k: int = 64, per_head: bool = False, **_) -> int:
    """E K and F V (B, h, k, d) (both run even with share_kv), Q K'^T (B, h, T, k), P V' (B, h, T, d),
    and |E| @ real (B, 1 or h, k, 1), the rows that sum a real position."""
    return 4 * B * h * k * T * d + 4 * B * h * T * k * d + 2 * B * (h if per_head else 1) * k * T


@register(ATTENTION, "performer")
def performer_flops(B: int, T: int, h: int, d: int, n_features: int = 128, **_) -> int:
    """phi(Q), phi(K): x @ W^T (B, h, T, m) each; phi(K)^T V (B, h, m, d); the normaliser phi(Q) @ sum phi(K)
    (B, h, T, 1); phi(Q) @ KV (B, h, T, d)."""
    m = n_features
    return 2 * 2 * B * h * T * d * m + 2 * B * h * m * T * d + 2 * B * h * T * m + 2 * B * h * T * m * d


@register(ATTENTION, "bigbird")
def bigbird_flops(B: int, T: int, h: int, d: int, block: int = 64, window: int = 3, n_global: int = 1, n_random: int = 2,
                  **_) -> int:
    """Per query block (nb = ceil(T / block), the last padded) a band of K * block keys, K = n_global +
    window + n_random: scores (B, h, nb, block, K block) and P V; then the n_global * block global
    queries against all T keys: (B, h, n, T) and P V."""
    nb, band = math.ceil(T / block), (n_global + window + n_random) * block
    sparse = 4 * B * h * nb * block * band * d
    return sparse + (4 * B * h * n_global * block * T * d if n_global else 0)


GATES = {"gru": 3, "lstm": 4, "boe": 0}  # gate blocks per recurrent cell: each a (in + hidden) -> hidden product


@register(MODELS, "slimformer_rnn")
def rnn_flops(config: dict, batch: int, seq_len: int) -> int:
    """Per token, layer and direction: gates * hidden x (input + hidden) products; then the classifier."""
    B, T, dim, cell = batch, seq_len, config["dim"], config.get("cell", "gru")
    if cell == "boe":
        return linear(B, dim, n_classes(config))
    hidden, layers = config["hidden_dim"], config.get("n_layers", 1)
    directions = 2 if config.get("bidirectional", True) else 1
    total = 0
    for layer in range(layers):
        fan_in = dim if layer == 0 else hidden
        total += directions * linear(B * T, fan_in + hidden, GATES[cell] * hidden)
    return total + linear(B, hidden * directions, n_classes(config))
