"""Students that are not Transformers: bag-of-embeddings, GRU and LSTM text classifiers.

Small specialised models are the other road to a fast classifier (Tang et al. 2019,
"Distilling Task-Specific Knowledge from BERT into Simple Neural Networks"): distilled from the
same teacher, they show in the report where a Transformer student is worth its cost.

- `boe`: the mean of the token embeddings, then a linear layer (fastText, Joulin et al. 2017).
- `gru` / `lstm`: recurrent encoders, optionally bidirectional, mean-pooled over real tokens.

With `embedding_dim` set the model is a sentence encoder: `classifier` projects the pooled state to
that width (the teacher's embedding width) and the output, in the `logits` field, is the sentence
embedding, L2-normalised when `normalize`. A bag of embeddings distilled that way is the static
route to sentence embeddings of model2vec (Tulkens & van Dongen 2024): one table lookup and a mean.

Padding never changes a real token's output: the forward direction reads left to right and
the pads sit at the end; the backward direction runs a forward RNN over each sequence
reversed *within its own length* (a gather), so it starts at the last real token. The
reversal is index arithmetic, so the model exports to ONNX with dynamic batch and length.
Same custom-model convention as `modeling_slimformer.py`: only torch and transformers imported.
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

CELLS = {"gru": nn.GRU, "lstm": nn.LSTM, "boe": None}


class SlimRNNConfig(PreTrainedConfig):
    model_type = "slimformer_rnn"
    attribute_map = {"hidden_size": "dim", "max_position_embeddings": "max_len"}

    vocab_size: int = 8000
    max_len: int = 128  # longest input accepted (kept for export and benchmarks; RNNs have no positions)
    cell: str = "gru"  # "boe" (bag of embeddings), "gru" or "lstm"
    dim: int = 128  # embedding width
    hidden_dim: int = 128  # recurrent state per direction (unused by boe)
    n_layers: int = 1  # stacked recurrent layers
    bidirectional: bool = True
    dropout: float = 0.1
    initializer_range: float = 0.02
    pad_token_id: int | None = 0
    embedding_dim: int | None = None  # a sentence encoder: the output is the pooled state projected to this width
    normalize: bool = False  # L2-normalise the sentence embedding

    def __post_init__(self, **kwargs):
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}, got {self.cell!r}")
        super().__post_init__(**kwargs)


def reverse_within_length(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Reverse each row's first `len` positions, keep the padding in place: (B, T, C) -> (B, T, C)."""
    T = x.shape[1]
    lengths = mask.sum(dim=1, keepdim=True)  # (B, 1)
    t = torch.arange(T, device=x.device)[None]  # (1, T)
    index = torch.where(t < lengths, lengths - 1 - t, t)  # (B, T); an involution, so it also undoes itself
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class SlimRNNPreTrainedModel(PreTrainedModel):
    config_class = SlimRNNConfig
    base_model_prefix = "slimformer_rnn"
    main_input_name = "input_ids"

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Embedding):
            module.weight.normal_(0.0, self.config.initializer_range)
            if module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.Linear):
            module.weight.normal_(0.0, self.config.initializer_range)
            module.bias.zero_()


class SlimRNNForSequenceClassification(SlimRNNPreTrainedModel):
    onnx_dynamo = False  # torch.export fixes the length of the reversed pass; compress/steps/export.py uses TorchScript
    def __init__(self, config: SlimRNNConfig):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.dim, padding_idx=config.pad_token_id)
        rnn = CELLS[config.cell]
        self.fwd = rnn(config.dim, config.hidden_dim, config.n_layers, batch_first=True) if rnn else None
        self.bwd = rnn(config.dim, config.hidden_dim, config.n_layers, batch_first=True) if rnn and config.bidirectional else None
        out_dim = config.dim if rnn is None else config.hidden_dim * (2 if config.bidirectional else 1)
        self.drop = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(out_dim, config.embedding_dim or config.num_labels)  # classes, or the embedding projection
        self.post_init()
        if config.embedding_dim is not None and not self.classifier.weight.is_meta:  # starts as the identity (truncated)
            with torch.no_grad():
                self.classifier.weight.copy_(torch.eye(*self.classifier.weight.shape))
                self.classifier.bias.zero_()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None, **kwargs) -> SequenceClassifierOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        x = self.drop(self.embeddings(input_ids))  # (B, T, dim)
        if self.fwd is not None:
            h = self.fwd(x)[0]  # (B, T, hidden_dim)
            if self.bwd is not None:
                back = reverse_within_length(self.bwd(reverse_within_length(x, attention_mask))[0], attention_mask)
                h = torch.cat([h, back], dim=-1)  # (B, T, 2 * hidden_dim)
            x = h
        m = attention_mask.to(x.dtype).unsqueeze(-1)  # (B, T, 1)
        pooled = (x * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)  # (B, out_dim)
        logits = self.classifier(self.drop(pooled))  # (B, n_classes), or the sentence embedding (B, embedding_dim)
        if self.config.embedding_dim is not None:
            return SequenceClassifierOutput(logits=F.normalize(logits, p=2.0, dim=-1) if self.config.normalize else logits)
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


__all__ = ["SlimRNNConfig", "SlimRNNForSequenceClassification"]
