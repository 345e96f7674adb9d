"""The slimformer model, registered with transformers' Auto classes.

After `from compress.models import SlimformerConfig` (or any model name), the classes are
registered, so `AutoModelForSequenceClassification.from_pretrained(folder)` loads any saved
slimformer stage. `register_for_auto_class` makes `save_pretrained` copy the model code into
the folder too, so it also loads with `trust_remote_code=True` where slimformer is not
installed. The model module is imported on first use: transformers takes seconds to import,
and `slimformer validate` needs only the sizes and the attention registry.
"""

from typing import Any

from .attention_full import FullAttention  # noqa: F401  (registers "full")
from .attention_registry import ATTENTION, build_attention, register_attention
from .sizes import SIZES

MODEL_NAMES = ("SlimformerConfig", "SlimformerForSequenceClassification", "SlimformerPreTrainedModel")


def register_auto_classes():
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from . import modeling_slimformer as m

    AutoConfig.register(m.SlimformerConfig.model_type, m.SlimformerConfig, exist_ok=True)
    AutoModelForSequenceClassification.register(m.SlimformerConfig, m.SlimformerForSequenceClassification, exist_ok=True)
    m.SlimformerConfig.register_for_auto_class()
    m.SlimformerForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
    return m


def __getattr__(name: str) -> Any:
    if name in MODEL_NAMES:
        return getattr(register_auto_classes(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ATTENTION", "SIZES", "build_attention", "register_attention", *MODEL_NAMES]
