"""Slimformer: a Transformer encoder classifier built to be cut, swapped and exported.

Read top to bottom: config -> embeddings -> MLP -> block -> classifier. The architecture is
BERT's encoder (Devlin et al. 2019) with learned positions, pre- or post-LayerNorm blocks
(Xiong et al. 2020 for pre-LN), mean or [CLS] pooling and a linear classification head.
Three optional pieces let BERT-family checkpoints load exactly (`import_hf.py`): embeddings
narrower than `dim` followed by a projection (ELECTRA, Clark et al. 2020), the tanh-approximated
GELU, and a dense + activation layer before the classifier (BERT's pooler, RoBERTa's and
ELECTRA's classification heads, DistilBERT's pre_classifier).

Positions are learned, one row per position up to `max_len`: an input longer than that raises
a ValueError naming the limit (there is no row to look up). `extend_positions_` grows the table
for a student that must read longer inputs than its teacher was trained on: `copy` repeats the
trained rows (Longformer's initialisation, Beltagy et al. 2020), so inputs within the old
length compute exactly what they did; `interpolate` stretches the trained table linearly over
the new length (position interpolation, Chen et al. 2023), which changes every position and
needs recovery training. Either way the rows past the old length were never trained on real
inputs of that length: recover (fine-tune/distil) on long inputs before trusting them.

What makes it compressible: every layer has its own `n_heads`, `ffn_dim` and attention kind in
the config, so a model whose heads were pruned, FFN narrowed or attention swapped saves and
reloads exactly with `from_pretrained`. Attention is built from a registry and injected into
each block; all kinds obey the contract in `attention_registry.py`.

Segment (token type) embeddings, for text pairs (BERT's sentence A / sentence B): with
`type_vocab_size` > 0 the embeddings add a row of `typ` per token, its type derived from the ids
themselves as BERT's pair encoding sets it, `[CLS] A [SEP]` type 0 and `B [SEP]` type 1: a token's
type is the number of `sep_token_id` tokens before it (capped at the table's last row). The model
takes no `token_type_ids` input, so an ONNX artifact, a server and a training batch carry
`input_ids` and `attention_mask` only, and a pair gives the checkpoint's logits at every real token
(padding gets type 1 instead of 0, which changes only the padding's own hidden states).

A sentence-embedding model (`embedding_dim` set: Sentence-BERT, Reimers & Gurevych 2019) has no
classifier: its output, in the `logits` field, is the pooled hidden state, projected to
`embedding_dim` by `classifier` when the width differs (a width cut keeps the teacher's embedding
width, so a student's vectors can replace the teacher's in an index), and L2-normalised when
`normalize` (sentence-transformers' Normalize module). `SlimformerModel` is the same weights read
as a bare encoder (its output: the final hidden states), the `AutoModel` sentence-transformers'
Transformer module loads.

Follows transformers' custom-model convention (PreTrainedConfig + PreTrainedModel registered
with the Auto classes, see `compress/models/__init__.py`). This file and the `attention_*.py`
files beside it import only torch and transformers, so a saved folder also loads with
`trust_remote_code=True` where slimformer is not installed.
"""

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput, SequenceClassifierOutput

from .attention_bigbird import BigBirdAttention  # noqa: F401  (registers "bigbird")
from .attention_full import FullAttention  # noqa: F401  (registers "full")
from .attention_linformer import LinformerAttention  # noqa: F401  (registers "linformer")
from .attention_performer import PerformerAttention  # noqa: F401  (registers "performer")
from .attention_registry import ATTENTION, build_attention

POOLINGS = ("mean", "cls")
NORMS = ("pre", "post")
# "gelu" is the exact erf GELU (transformers' "gelu"); "gelu_tanh" its tanh approximation ("gelu_new")
ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "gelu_tanh": partial(nn.GELU, approximate="tanh")}
HEAD_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU}


class SlimformerConfig(PreTrainedConfig):
    model_type = "slimformer"
    attribute_map = {"hidden_size": "dim", "num_hidden_layers": "n_layers", "max_position_embeddings": "max_len"}

    vocab_size: int = 8000
    max_len: int = 128  # learned positions: the longest input the model accepts
    dim: int = 128  # width of the residual stream
    n_layers: int = 2
    n_heads: int | list[int] = 4  # one int for every layer, or a list with one entry per layer
    head_dim: int | None = None  # per-head width; default dim // n_heads; kept when heads are pruned
    ffn_dim: int | list[int] = 512  # hidden width of each layer's MLP; int or per-layer list
    attention: str | dict | list[dict] = "full"  # kind, {"kind": ..., **args}, or one per layer
    norm: str = "pre"  # "pre" (LayerNorm inside the residual branch) or "post" (BERT)
    pooling: str = "mean"  # "mean" over real tokens, or "cls" (the first token)
    activation: str = "gelu"  # MLP activation: "gelu" (exact), "gelu_tanh" or "relu"
    embed_dim: int | None = None  # width of the token/position embeddings; set below dim, a Linear projects them up (ELECTRA)
    # None: pooled -> classifier; "tanh"/"relu"/"gelu": pooled -> classifier_dense -> that activation -> classifier
    head_activation: str | None = None
    classifier_dim: int | None = None  # output width of classifier_dense; default dim (prune_width narrows dim, not the head)
    # a sentence-embedding model: the output is the pooled state (B, embedding_dim), through a Linear `classifier` when
    # dim differs (a student narrower than its teacher); None: a classifier into num_labels classes
    embedding_dim: int | None = None
    normalize: bool = False  # L2-normalise the sentence embedding (sentence-transformers' Normalize module)
    type_vocab_size: int = 0  # segment embeddings for text pairs (BERT's token types); 0: none (single texts)
    sep_token_id: int | None = None  # the separator whose count before a token is its type (with type_vocab_size > 0)
    dropout: float = 0.1
    attention_dropout: float = 0.0
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    pad_token_id: int | None = 0

    def __post_init__(self, **kwargs):
        n = self.n_layers
        if isinstance(self.n_heads, int):
            self.n_heads = [self.n_heads] * n
        if self.head_dim is None:
            self.head_dim = self.dim // max(self.n_heads[0], 1)
        if isinstance(self.ffn_dim, int):
            self.ffn_dim = [self.ffn_dim] * n
        if isinstance(self.attention, (str, dict)):
            self.attention = [self.attention] * n
        self.attention = [{"kind": a} if isinstance(a, str) else dict(a) for a in self.attention]
        for name in ("n_heads", "ffn_dim", "attention"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries; give one per layer ({n})")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        if self.embed_dim == self.dim:
            self.embed_dim = None  # no projection needed
        if self.embed_dim is not None and self.embed_dim < 1:
            raise ValueError(f"embed_dim must be a positive width (or null for dim), got {self.embed_dim}")
        if self.classifier_dim is not None and self.classifier_dim < 1:
            raise ValueError(f"classifier_dim must be a positive width (or null for dim), got {self.classifier_dim}")
        if self.head_activation is not None and self.head_activation not in HEAD_ACTIVATIONS:
            raise ValueError(f"head_activation must be null or one of {sorted(HEAD_ACTIVATIONS)}, got {self.head_activation!r}")
        if self.type_vocab_size and self.sep_token_id is None:
            raise ValueError(f"type_vocab_size {self.type_vocab_size} needs sep_token_id: the separator that ends segment A")
        if self.embedding_dim is not None and (self.embedding_dim < 1 or self.head_activation is not None):
            raise ValueError(f"embedding_dim {self.embedding_dim}: a sentence-embedding model has a positive width and no "
                             "classification head (head_activation null)")
        super().__post_init__(**kwargs)


class Embeddings(nn.Module):
    """Token + learned position embeddings, LayerNorm, dropout; then `proj` up to `dim` when the
    tables are narrower (`embed_dim`, ELECTRA's `embeddings_project`), else `proj` is None."""

    def __init__(self, config: SlimformerConfig):
        super().__init__()
        width = config.embed_dim or config.dim
        self.tok = nn.Embedding(config.vocab_size, width, padding_idx=config.pad_token_id)
        self.pos = nn.Embedding(config.max_len, width)
        self.norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.drop = nn.Dropout(config.dropout)
        self.proj = nn.Linear(width, config.dim) if config.embed_dim is not None else None
        self.typ = nn.Embedding(config.type_vocab_size, width) if config.type_vocab_size else None
        self.sep_token_id = config.sep_token_id

    def token_types(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) segment of each token: separators before it, capped at the last row ([CLS] A [SEP] -> 0, B [SEP] -> 1)."""
        sep = (input_ids == self.sep_token_id).long()  # (B, T)
        return (sep.cumsum(dim=1) - sep).clamp(max=self.typ.num_embeddings - 1)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)  # (T,)
        x = self.tok(input_ids) + self.pos(positions)[None]  # (B, T, embed_dim or dim)
        if self.typ is not None:
            x = x + self.typ(self.token_types(input_ids))
        x = self.drop(self.norm(x))
        return x if self.proj is None else self.proj(x)  # (B, T, dim)


class MLP(nn.Module):
    def __init__(self, dim: int, ffn_dim: int, activation: str):
        super().__init__()
        self.up_proj = nn.Linear(dim, ffn_dim)
        self.act = ACTIVATIONS[activation]()
        self.down_proj = nn.Linear(ffn_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.up_proj(x)))  # (B, T, dim)


class Block(nn.Module):
    """One encoder layer. `attn` is injected: any registered attention kind fits.

    A layer whose heads (or FFN neurons) were all pruned has `attn` (or `mlp`) set to None and
    that branch is skipped: the residual stream passes through unchanged.
    """

    def __init__(self, config: SlimformerConfig, attn: nn.Module | None, ffn_dim: int):
        super().__init__()
        self.pre_norm = config.norm == "pre"
        self.attn = attn
        self.norm1 = nn.LayerNorm(config.dim, eps=config.layer_norm_eps)
        self.mlp = MLP(config.dim, ffn_dim, config.activation) if ffn_dim > 0 else None
        self.norm2 = nn.LayerNorm(config.dim, eps=config.layer_norm_eps)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if self.pre_norm:
            if self.attn is not None:
                x = x + self.drop(self.attn(self.norm1(x), mask))
            if self.mlp is not None:
                x = x + self.drop(self.mlp(self.norm2(x)))
        else:
            if self.attn is not None:
                x = self.norm1(x + self.drop(self.attn(x, mask)))
            if self.mlp is not None:
                x = self.norm2(x + self.drop(self.mlp(x)))
        return x  # (B, T, dim)


class SlimformerPreTrainedModel(PreTrainedModel):
    config_class = SlimformerConfig
    base_model_prefix = "slimformer"
    main_input_name = "input_ids"
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            module.weight.normal_(0.0, std)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.normal_(0.0, std)
            if module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            module.weight.fill_(1.0)
            module.bias.zero_()


class SlimformerForSequenceClassification(SlimformerPreTrainedModel):
    def __init__(self, config: SlimformerConfig):
        super().__init__(config)
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(
            Block(config, self.build_layer_attention(config, i), config.ffn_dim[i]) for i in range(config.n_layers)
        )
        self.norm = nn.LayerNorm(config.dim, eps=config.layer_norm_eps) if config.norm == "pre" else nn.Identity()
        self.drop = nn.Dropout(config.dropout)
        # optional dense + activation before the classifier (BERT's pooler, RoBERTa/ELECTRA/DistilBERT heads);
        # named classifier_* so the default `classifier*` protect glob keeps it out of pruning and quantization
        head = config.head_activation
        width = (config.classifier_dim or config.dim) if head is not None else config.dim  # what the classifier reads
        self.classifier_dense = nn.Linear(config.dim, width) if head is not None else None
        self.classifier_act = HEAD_ACTIVATIONS[head]() if head is not None else None
        if config.embedding_dim is None:
            self.classifier = nn.Linear(width, config.num_labels)
        else:  # the projection of the pooled state to the embedding width, where they differ
            self.classifier = nn.Linear(config.dim, config.embedding_dim) if config.dim != config.embedding_dim else None
        self.post_init()
        self.tie_shared_projections_()
        if self.classifier is not None and config.embedding_dim is not None:
            self.reset_projection_()

    @torch.no_grad()
    def reset_projection_(self) -> None:
        """The embedding projection as the identity on the first min(dim, embedding_dim) channels, bias 0: a student
        whose first channels were copied from its teacher starts from the teacher's coordinates."""
        weight = self.classifier.weight
        if weight.is_meta:  # from_pretrained builds on the meta device, then loads the saved projection
            return
        weight.copy_(torch.eye(*weight.shape, dtype=weight.dtype))  # (embedding_dim, dim)
        self.classifier.bias.zero_()

    def add_projection_(self) -> None:
        """Give an embedding model whose width equals its embedding width an identity projection (prune_width
        then cuts its input side with the residual stream: the kept channels' coordinates of the teacher)."""
        if self.config.embedding_dim is None or self.classifier is not None:
            return
        p = self.embeddings.tok.weight
        self.classifier = nn.Linear(self.config.dim, self.config.embedding_dim, device=p.device, dtype=p.dtype)
        self.reset_projection_()

    @staticmethod
    def build_layer_attention(config: SlimformerConfig, i: int) -> nn.Module | None:
        if config.n_heads[i] == 0:
            return None
        return build_attention(config.attention[i], config.dim, config.n_heads[i], config.head_dim, config.attention_dropout)

    def tie_shared_projections_(self) -> None:
        """Layers whose attention sets `share_layers` (Linformer's layerwise sharing) use the first such layer's projections.

        Called on build, after a swap and after `from_pretrained` loads the weights (`tie_weights`):
        a saved model holds the owner's copy once, and transformers' tying map names the others, so
        they are not reported missing."""
        owner = None
        for i, layer in enumerate(self.layers):
            attn = layer.attn
            if attn is None or not getattr(attn, "share_layers", False):
                continue
            if owner is None:
                owner = (i, attn)
            elif type(attn) is not type(owner[1]):
                raise ValueError(f"share_layers ties layers of one attention kind; got {owner[1].kind} and {attn.kind}")
            else:
                attn.share_from_(owner[1])
                tied = getattr(self, "all_tied_weights_keys", None)
                if tied is not None:
                    tied.update({f"layers.{i}.attn.{n}": f"layers.{owner[0]}.attn.{n}" for n in attn._tied_weights_keys})

    def tie_weights(self, *args, **kwargs):
        super().tie_weights(*args, **kwargs)
        self.tie_shared_projections_()

    @torch.no_grad()
    def extend_positions_(self, max_len: int, how: str = "copy") -> None:
        """Grow the learned position table to `max_len` rows in place and set `config.max_len`.

        `copy`: rows past the old length repeat the trained table (row p = old row p mod old_len),
        so inputs within the old length are unchanged. `interpolate`: the trained table resampled
        linearly to `max_len` rows (first and last rows kept). Layers whose attention has a
        `max_len` of its own (Linformer's E/F) must be swapped after extending: they are refused here.
        """
        old = self.embeddings.pos.weight  # (old_len, width)
        old_len = old.shape[0]
        if max_len <= old_len:
            raise ValueError(f"extend_positions_ grows the table: max_len {max_len} must exceed the current {old_len}")
        if how not in ("copy", "interpolate"):
            raise ValueError(f"extend_positions_ how must be 'copy' or 'interpolate', got {how!r}")
        fixed = [i for i, layer in enumerate(self.layers) if layer.attn is not None and getattr(layer.attn, "max_len", None) is not None]
        if fixed:
            raise ValueError(f"layers {fixed} have attention with its own max_len ({self.layers[fixed[0]].attn.kind}); "
                             "extend positions before swapping to it")
        if how == "copy":
            rows = old[torch.arange(max_len, device=old.device) % old_len]  # (max_len, width)
        else:  # (1, width, old_len) -> (1, width, max_len) -> (max_len, width)
            rows = F.interpolate(old.T[None].float(), size=max_len, mode="linear", align_corners=True)[0].T.to(old.dtype)
        pos = nn.Embedding(max_len, old.shape[1], device=old.device, dtype=old.dtype)
        pos.weight.copy_(rows)
        self.embeddings.pos = pos
        self.config.max_len = max_len

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.tok

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.tok = value

    def pool(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if self.config.pooling == "cls":
            return x[:, 0]  # (B, dim)
        if mask is None:
            return x.mean(dim=1)
        m = mask.to(x.dtype).unsqueeze(-1)  # (B, T, 1)
        return (x * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)  # (B, dim)

    def encode(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, hidden_states: list | None = None
    ) -> torch.Tensor:
        """The final hidden states (B, T, dim), after the final norm of a pre-LN model: what the
        classifier pools and what a masked-LM head reads. When `hidden_states` is a list, the
        embeddings' output and every layer's output (before the final norm) are appended to it."""
        if input_ids.shape[1] > self.config.max_len:
            raise ValueError(f"input has {input_ids.shape[1]} tokens; this model accepts at most max_len={self.config.max_len} "
                             "(learned positions); truncate the input, or extend the table (swap_attention's "
                             "`max_len:`, `extend_positions_`) and recover on long inputs")
        x = self.embeddings(input_ids)  # (B, T, dim)
        if hidden_states is not None:
            hidden_states.append(x)
        for layer in self.layers:
            x = layer(x, attention_mask)
            if hidden_states is not None:
                hidden_states.append(x)
        return self.norm(x)  # (B, T, dim)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        hidden_states = [] if output_hidden_states else None
        x = self.encode(input_ids, attention_mask, hidden_states)  # (B, T, dim)
        pooled = self.pool(x, attention_mask)  # (B, dim)
        if self.config.embedding_dim is not None:  # a sentence embedding, in the logits field
            emb = pooled if self.classifier is None else self.classifier(pooled)  # (B, embedding_dim)
            emb = F.normalize(emb, p=2.0, dim=-1) if self.config.normalize else emb
            return SequenceClassifierOutput(logits=emb, hidden_states=tuple(hidden_states) if output_hidden_states else None)
        if self.classifier_dense is not None:
            pooled = self.classifier_act(self.classifier_dense(self.drop(pooled)))  # (B, classifier_dim or dim)
        logits = self.classifier(self.drop(pooled))  # (B, n_classes)
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=tuple(hidden_states) if output_hidden_states else None
        )


class SlimformerModel(SlimformerForSequenceClassification):
    """The same weights as a bare encoder: the output is the final hidden states (B, T, dim), as transformers'
    `AutoModel` gives them (sentence-transformers' Transformer module pools them itself). The head's weights
    load and are not used."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, output_hidden_states: bool = False,
                return_dict: bool | None = None, **kwargs) -> BaseModelOutput:
        hidden_states = [] if output_hidden_states else None
        x = self.encode(input_ids, attention_mask, hidden_states)  # (B, T, dim)
        return BaseModelOutput(last_hidden_state=x, hidden_states=tuple(hidden_states) if output_hidden_states else None)


__all__ = [
    "ACTIVATIONS", "ATTENTION", "HEAD_ACTIVATIONS",
    "SlimformerConfig", "SlimformerForSequenceClassification", "SlimformerModel", "SlimformerPreTrainedModel",
]
