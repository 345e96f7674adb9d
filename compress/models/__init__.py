"""The slimformer model, registered with transformers' Auto classes.

After `from compress.models import SlimformerConfig` (or any model name), the classes are
registered, so `AutoModelForSequenceClassification.from_pretrained(folder)` loads any saved
slimformer stage. `register_for_auto_class` makes `save_pretrained` copy the model code into
the folder too, so it also loads with `trust_remote_code=True` where slimformer is not
installed. The model module is imported on first use: transformers takes seconds to import,
and `slimformer validate` needs only the sizes and the attention registry.
"""

from typing import Any

from .attention_bigbird import BigBirdAttention  # noqa: F401  (registers "bigbird")
from .attention_full import FullAttention  # noqa: F401  (registers "full")
from .attention_linformer import LinformerAttention  # noqa: F401  (registers "linformer")
from .attention_performer import PerformerAttention  # noqa: F401  (registers "performer")
from .attention_registry import ATTENTION, build_attention, register_attention
from .sizes import SIZES

MODEL_NAMES = {
    "SlimformerConfig": "modeling_slimformer",
    "SlimformerForSequenceClassification": "modeling_slimformer",
    "SlimformerModel": "modeling_slimformer",
    "SlimformerPreTrainedModel": "modeling_slimformer",
    "SlimRNNConfig": "modeling_rnn",
    "SlimRNNForSequenceClassification": "modeling_rnn",
}


def register_auto_classes() -> None:
    """Register both model families (Transformer, and the BoE/GRU/LSTM students) with the Auto classes."""
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

    from . import modeling_rnn, modeling_slimformer

    for config, model in (
        (modeling_slimformer.SlimformerConfig, modeling_slimformer.SlimformerForSequenceClassification),
        (modeling_rnn.SlimRNNConfig, modeling_rnn.SlimRNNForSequenceClassification),
    ):
        AutoConfig.register(config.model_type, config, exist_ok=True)
        AutoModelForSequenceClassification.register(config, model, exist_ok=True)
        config.register_for_auto_class()
        model.register_for_auto_class("AutoModelForSequenceClassification")
    # the bare encoder (final hidden states), which sentence-transformers' Transformer module loads
    AutoModel.register(modeling_slimformer.SlimformerConfig, modeling_slimformer.SlimformerModel, exist_ok=True)


def __getattr__(name: str) -> Any:
    if name in MODEL_NAMES:
        import importlib

        register_auto_classes()
        return getattr(importlib.import_module(f".{MODEL_NAMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ATTENTION", "SIZES", "build_attention", "register_attention", *MODEL_NAMES]
