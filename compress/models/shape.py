"""A model's shape as a recipe's steps change it, known before anything runs.

`slimformer validate` and `slimformer run` carry one `ModelShape` through a recipe's steps
(`compress/run/preflight.py`): the teacher's (built from `teacher:`, or read from the imported
checkpoint's config and headers), then each step's config turns the shape it receives into the
shape it makes (`check_shape`): a width cut, a head or FFN cut, a student, a swap. A step that
cannot apply to the shape it will receive says so then, before the teacher trains.

Some counts depend on what runs: a global ranking of heads keeps between one and all of a
layer's heads, decided by importance scores. Per-layer counts are therefore ranges `(low, high)`,
and a check takes the bound that could break it (a later cut of a fraction of each layer checks
the layer's fewest heads). Transformers' rule holds for every shape, teachers and students alike:
a width that is not a multiple of the head count needs an explicit `head_dim`.
"""

from dataclasses import dataclass, replace

Span = tuple[int, int]  # (fewest, most): equal when the count is known before the run


@dataclass(frozen=True)
class ModelShape:
    kind: str  # "transformer", or an RNN student's cell: "boe", "gru", "lstm" (no heads, no FFN)
    dim: int  # the residual width
    n_layers: int
    head_dim: int | None
    n_heads: tuple[Span, ...]  # per layer
    ffn_dim: tuple[Span, ...]  # per layer
    max_len: int  # learned positions
    vocab_size: int | None = None  # None: a tokenizer trained at run time decides it
    embed_dim: int | None = None  # narrower token tables with a projection (ELECTRA)

    @classmethod
    def transformer(cls, dim: int, n_layers: int, n_heads, ffn_dim, head_dim: int | None, max_len: int,
                    vocab_size: int | None = None, embed_dim: int | None = None) -> "ModelShape":
        """A Transformer's shape; `n_heads`/`ffn_dim` an int (every layer) or one per layer."""
        def spans(value) -> tuple[Span, ...]:
            values = value if isinstance(value, (list, tuple)) else [value] * n_layers
            return tuple((int(v), int(v)) for v in values)

        return cls("transformer", dim, n_layers, head_dim, spans(n_heads), spans(ffn_dim), max_len, vocab_size, embed_dim)

    @classmethod
    def of_config(cls, config) -> "ModelShape":
        """The shape of a model's SlimformerConfig (an imported checkpoint's, a saved stage's)."""
        return cls.transformer(config.dim, config.n_layers, list(config.n_heads), list(config.ffn_dim), config.head_dim,
                               config.max_len, config.vocab_size, config.embed_dim)

    def is_transformer(self) -> bool:
        return self.kind == "transformer"

    def evolve(self, **changes) -> "ModelShape":
        return replace(self, **changes)

    def describe(self) -> str:
        """'4 layers, dim 64, heads [2, 2], ffn [256, 256]' (a range as 1-2)."""
        if not self.is_transformer():
            return f"a {self.kind} model, dim {self.dim}"

        def text(spans: tuple[Span, ...]) -> str:
            return "[" + ", ".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in spans) + "]"

        return f"{self.n_layers} layers, dim {self.dim}, heads {text(self.n_heads)}, ffn {text(self.ffn_dim)}"


def check_head_split(dim: int, n_heads: int, head_dim: int | None, field: str = "") -> None:
    """Transformers' rule for every shape: `dim` splits into `n_heads` heads unless `head_dim` is given (ValueError)."""
    if head_dim is None and dim % n_heads:
        raise ValueError(f"{field}dim {dim} is not divisible by {field}n_heads {n_heads}; set {field}head_dim "
                         f"(or a dim that {n_heads} divides, e.g. {dim - dim % n_heads or n_heads})")
