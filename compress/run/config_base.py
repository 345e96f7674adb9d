"""The config classes every step and the recipe share: a leaf (imports only pydantic and the model registries).

`ConfigBase` (unknown keys are errors listing the valid ones) comes from `eval/schema.py`, which
reads every YAML file a user writes. Here: `StepConfig` (fields every step has), `ModelConfig`
(a Transformer's shape), `BenchConfig` (the measurement protocol) and `ReportConfig`. Step
files import these; the recipe itself, whose `steps:` union needs the full step registry, is
assembled in `compress/run/config.py`.
"""

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator

from compress.models import ATTENTION, SIZES
from compress.models.shape import check_head_split
from eval.schema import ConfigBase

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"  # stage, step and run names: no slashes, no leading dot

__all__ = ["NAME_PATTERN", "ConfigBase", "StepConfig", "ModelConfig", "TeacherConfig", "BenchConfig", "ReportConfig"]


class StepConfig(ConfigBase):
    """Fields every step has. Each step kind subclasses it with `kind: Literal[...]`."""

    kind: str
    # the stage name a model-producing step saves under; other steps act on the current stage
    name: str | None = Field(None, pattern=NAME_PATTERN)

    @model_validator(mode="after")
    def default_name(self):
        if self.name is None:
            self.name = self.kind
        return self


class ModelConfig(ConfigBase):
    """A Transformer's shape: a named `size` and/or explicit fields that override it."""

    size: Literal[tuple(SIZES)] | None = "mini"  # named size from compress/models/sizes.py
    dim: int | None = Field(None, ge=8, le=8192)  # overrides the size's width
    n_layers: int | None = Field(None, ge=1, le=64)
    n_heads: int | None = Field(None, ge=1, le=128)
    head_dim: int | None = Field(None, ge=4, le=512)  # default dim // n_heads
    ffn_dim: int | None = Field(None, ge=1, le=65536)
    attention: str = "full"  # attention kind for every layer (see `slimformer ls`)
    norm: Literal["pre", "post"] = "pre"
    pooling: Literal["mean", "cls"] = "mean"
    activation: Literal["gelu", "gelu_tanh", "relu"] = "gelu"
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    attention_dropout: float = Field(0.0, ge=0.0, lt=1.0)

    def shape(self) -> dict:
        """The size's fields with the explicit ones laid over them."""
        base = dict(SIZES[self.size]) if self.size else {}
        for key in ("dim", "n_layers", "n_heads", "head_dim", "ffn_dim"):
            if getattr(self, key) is not None:
                base[key] = getattr(self, key)
        return base

    @model_validator(mode="after")
    def check_shape(self):
        shape = self.shape()
        missing = [k for k in ("dim", "n_layers", "n_heads", "ffn_dim") if k not in shape]
        if missing:
            raise ValueError(f"give a `size` ({', '.join(SIZES)}) or all of {missing}")
        check_head_split(shape["dim"], shape["n_heads"], shape.get("head_dim"))  # students obey it too (steps/distill.py)
        if self.attention not in ATTENTION:
            raise ValueError(f"unknown attention kind {self.attention!r}; choose one of {sorted(ATTENTION)}")
        return self

    def build_config(self, vocab_size: int, max_len: int, label_names: list[str]):
        from compress.models import SlimformerConfig

        return SlimformerConfig(
            vocab_size=vocab_size,
            max_len=max_len,
            attention=self.attention,
            norm=self.norm,
            pooling=self.pooling,
            activation=self.activation,
            dropout=self.dropout,
            attention_dropout=self.attention_dropout,
            id2label=dict(enumerate(label_names)),
            label2id={n: i for i, n in enumerate(label_names)},
            **self.shape(),
        )


class TeacherConfig(ModelConfig):
    """The teacher: a shape slimformer builds and trains (the fields above), or a pretrained Hugging Face
    encoder folder imported with `from:` (BERT/MiniLM, RoBERTa, XLM-R, DistilBERT, ELECTRA; see
    compress/models/import_hf.py), whose shape, attention and tokenizer come from the checkpoint."""

    model_config = ConfigDict(populate_by_name=True)
    # a local folder with config.json + *.safetensors + tokenizer files, relative to the recipe file
    from_: str | None = Field(None, alias="from", min_length=1)

    @model_validator(mode="after")
    def check_import(self):
        if self.from_ is None:
            return self
        fixed = sorted(self.model_fields_set - {"from_", "pooling"})
        if fixed:
            raise ValueError(f"teacher.from imports the checkpoint's shape; remove {', '.join(f'teacher.{k}' for k in fixed)} "
                             "(only teacher.pooling may be set, for a checkpoint without a classification head)")
        return self

    def imports(self) -> bool:
        return self.from_ is not None


class BenchConfig(ConfigBase):
    """The measurement protocol: every `bench` step in a run uses it, so ratios compare like with like."""

    batch_sizes: list[Annotated[int, Field(ge=1, le=4096)]] = [1, 8]
    seq_lens: list[Annotated[int, Field(ge=1)]] | None = None  # default: the task's seq_len
    threads: int = Field(2, ge=1, le=256)  # intra-op threads for torch and ONNX Runtime
    warmup: int = Field(5, ge=0)  # untimed calls before timing
    repeats: int = Field(30, ge=3)  # timed calls per setting
    torch: bool = True  # also time eager torch (CPU, and CUDA when present)
    memory: bool = True  # peak memory of a fresh process that loads the ONNX artifact
    # after the last step, time every stage's ONNX artifact (and eager torch model) again in interleaved rounds
    # (eval/interleave.py), so a load change on a shared machine hits all stages and runtimes alike
    interleave: bool = True
    # also time each stage's artifact on real test texts as a user serves them (eval/traffic.py, docs/measuring-traffic.md):
    # tokenization included, batch 1 per request (p50/p99) and length-sorted batches padded to their longest (texts/s)
    traffic: bool = True
    traffic_texts: int = Field(500, ge=1, le=100_000)  # the first N test texts, in split order, that the traffic timer serves
    traffic_batch_size: int = Field(32, ge=1, le=4096)  # texts per batch of the sorted pass


class ReportConfig(ConfigBase):
    baseline: str | None = None  # stage every row is compared against; default: the first stage
