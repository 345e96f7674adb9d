"""The `distill` step: train a smaller student to imitate the teacher.

Distillation is a loss, not a second loop: the student trains in `compress.training.loop.train` with a
weighted sum of the losses in `compress/training/losses.py` (soft targets, hard labels, hidden states,
attention relations). Students are Transformers of any shape (DistilBERT's layer-copy init,
Sanh et al. 2019; TinyBERT's layer mapping, Jiao et al. 2020) or the BoE/GRU/LSTM models of
`compress/models/modeling_rnn.py` (Tang et al. 2019). The teacher's logits on the training set
are computed once and cached beside the teacher, reused across epochs and students. Optional
augmentation (masked-token and adjacent-swap copies of the training texts, labelled by the
teacher, after TinyBERT and Tang et al. 2019) gives the student more transfer data, and so do
unlabelled texts (`unlabeled:` files), the transfer set of DistilBERT and TinyBERT, labelled by
the teacher's soft targets (hard label: the teacher's argmax); `compress/training/transfer.py` builds it.

When the teacher is a sentence-embedding model (an embedding task), the student is one too, with
the teacher's embedding width, pooling and normalisation (a narrower Transformer, or a bag of
embeddings, projects its pooled state to that width), and it learns the teacher's embeddings with
the `embedding:` loss instead of soft targets (Reimers & Gurevych 2020, "Making Monolingual Sentence
Embeddings Multilingual using Knowledge Distillation"; `compress/training/embedding.py`); hidden-state
and attention losses still apply. The best epoch is the one closest to the teacher on validation.
"""

from functools import partial
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from compress.errors import RecipeError
from compress.models.shape import ModelShape, check_head_split
from compress.run.config_base import NAME_PATTERN, ConfigBase, ModelConfig, StepConfig
from compress.run.registry import register_step
from compress.training.embedding import EmbeddingLoss, embedding_loss, is_embedding, score_key, validation
from compress.training.loop import OptimConfig, train
from compress.training.losses import hidden_loss, logits_loss, relation_heads, relation_loss
from compress.training.transfer import TransferConfig, transfer_set, unlabeled_inputs


class StudentConfig(ModelConfig):
    """The student: `kind: transformer` takes the teacher's shape with the given fields laid over it."""

    kind: Literal["transformer", "boe", "gru", "lstm"] = "transformer"
    size: ModelConfig.model_fields["size"].annotation = None  # named size; default: the teacher's shape
    attention: str | None = None  # default: the teacher's attention kind
    norm: Literal["pre", "post"] | None = None  # default: the teacher's
    pooling: Literal["mean", "cls"] | None = None
    activation: Literal["gelu", "gelu_tanh", "relu"] | None = None
    hidden_dim: int | None = Field(None, ge=1, le=8192)  # gru/lstm state per direction; default: dim
    bidirectional: bool = True  # gru/lstm read both ways

    @model_validator(mode="after")
    def check_shape(self):  # replaces ModelConfig's: missing fields come from the teacher (student_shape, before the run)
        from compress.models import ATTENTION

        if self.attention is not None and self.attention not in ATTENTION:
            raise ValueError(f"unknown attention kind {self.attention!r}; choose one of {sorted(ATTENTION)}")
        shape = self.shape()
        if self.kind == "transformer" and "dim" in shape and "n_heads" in shape:  # both known here: the teacher's rule now
            check_head_split(shape["dim"], shape["n_heads"], shape.get("head_dim"))
        return self

    def resolve(self, teacher: dict) -> dict:
        """The student's dim, n_layers, n_heads, head_dim and ffn_dim: the teacher's (`teacher`: those keys, one
        head count and FFN width) with the student's fields laid over them. A Transformer student obeys the
        teacher's rule: a width its head count does not divide needs head_dim (ValueError)."""
        if self.kind != "transformer":
            dim = self.dim or (self.shape().get("dim") if self.size else None) or teacher["dim"]
            return {"dim": dim, "n_layers": self.n_layers or 1}
        shape = {k: teacher[k] for k in ("dim", "n_layers", "n_heads", "head_dim", "ffn_dim")}
        shape.update(self.shape())
        if shape["dim"] != teacher["dim"] and self.head_dim is None:  # a new width: its heads split it
            if "n_heads" in self.shape():
                check_head_split(shape["dim"], shape["n_heads"], None, field="student.")
            elif shape["dim"] % shape["n_heads"]:
                raise ValueError(f"student.dim {shape['dim']} is not divisible by the teacher's {shape['n_heads']} heads, "
                                 "which the student keeps; set student.n_heads (a divisor of its dim) or student.head_dim")
            shape["head_dim"] = shape["dim"] // shape["n_heads"]
        return shape

    def student_shape(self, teacher: ModelShape) -> ModelShape:
        """The student's shape, from the teacher's (ValueError when the student breaks a shape rule)."""
        dims = self.resolve({"dim": teacher.dim, "n_layers": teacher.n_layers, "n_heads": teacher.n_heads[0][0],
                             "head_dim": teacher.head_dim, "ffn_dim": teacher.ffn_dim[0][0]})
        if self.kind != "transformer":
            return ModelShape(self.kind, dims["dim"], dims["n_layers"], None, (), (), teacher.max_len, teacher.vocab_size)
        embed_dim = teacher.embed_dim if teacher.embed_dim is not None and teacher.embed_dim < dims["dim"] else None
        return ModelShape.transformer(dims["dim"], dims["n_layers"], dims["n_heads"], dims["ffn_dim"], dims["head_dim"],
                                      teacher.max_len, teacher.vocab_size, embed_dim)

    def build(self, teacher_config):
        """A fresh student model; unset fields follow the teacher."""
        from compress.models import SlimformerForSequenceClassification, SlimRNNConfig, SlimRNNForSequenceClassification

        t = teacher_config
        labels = {"id2label": t.id2label, "label2id": t.label2id}
        # a sentence-embedding teacher's students embed too, at its width, normalised as it is
        labels |= {"embedding_dim": getattr(t, "embedding_dim", None), "normalize": getattr(t, "normalize", False)}
        shape = self.resolve({"dim": t.dim, "n_layers": t.n_layers, "n_heads": t.n_heads[0], "head_dim": t.head_dim,
                              "ffn_dim": t.ffn_dim[0]})
        if self.kind != "transformer":
            dim = shape["dim"]
            config = SlimRNNConfig(vocab_size=t.vocab_size, max_len=t.max_len, pad_token_id=t.pad_token_id, cell=self.kind,
                                   dim=dim, hidden_dim=self.hidden_dim or dim, n_layers=self.n_layers or 1,
                                   bidirectional=self.bidirectional, dropout=self.dropout, **labels)
            return SlimRNNForSequenceClassification(config)
        # what an imported teacher has beyond the shape (pad id, LayerNorm eps, its head, narrower embeddings) carries over,
        # so a student initialised from the teacher's layers computes what they computed
        embed_dim = t.embed_dim if t.embed_dim is not None and t.embed_dim < shape["dim"] else None
        config = type(t)(
            vocab_size=t.vocab_size, max_len=t.max_len, attention=self.attention or t.attention[0]["kind"],
            norm=self.norm or t.norm,
            pooling=self.pooling or t.pooling, activation=self.activation or t.activation, dropout=self.dropout,
            attention_dropout=self.attention_dropout, pad_token_id=t.pad_token_id, layer_norm_eps=t.layer_norm_eps,
            head_activation=t.head_activation, embed_dim=embed_dim, type_vocab_size=getattr(t, "type_vocab_size", 0),
            sep_token_id=getattr(t, "sep_token_id", None), **shape, **labels,
        )
        return SlimformerForSequenceClassification(config)


class LossWeights(ConfigBase):
    logits: float = Field(1.0, ge=0)  # soft-target KL at `temperature`, scaled by T^2
    hard: float = Field(0.0, ge=0)  # cross-entropy with the true labels
    hidden: float = Field(0.0, ge=0)  # MSE between mapped hidden states (Transformer students)
    attention: float = Field(0.0, ge=0)  # KL between mapped attention relations (Transformer students)


class DistillConfig(StepConfig, OptimConfig, TransferConfig):
    """Distill the teacher into a smaller student (Transformer, bag-of-embeddings, GRU or LSTM), on the transfer set
    (`augment:` copies and `unlabeled:` files, compress/training/transfer.py)."""

    kind: Literal["distill"] = "distill"
    name: str | None = Field("student", pattern=NAME_PATTERN)  # the stage this step makes
    student: StudentConfig = Field(default_factory=StudentConfig)
    init: Literal["teacher_layers", "random"] = "teacher_layers"  # copy (truncated) teacher weights, or start fresh
    layer_map: list[int] | None = None  # teacher layer each student layer learns from; default evenly spaced
    losses: LossWeights = Field(default_factory=LossWeights)
    temperature: float = Field(2.0, gt=0)  # softens both distributions in the logits loss
    attention_form: Literal["probs", "value_relation"] = "probs"  # probs: Q-K relations; value_relation adds V-V (MiniLM)
    # a sentence-embedding teacher (embedding task): the student's embedding against the teacher's replaces logits and hard
    embedding: EmbeddingLoss = Field(default_factory=EmbeddingLoss)

    def check_shape(self, shape: ModelShape, teacher: ModelShape) -> ModelShape:
        """The student's shape, built from the teacher's (compress/run/preflight.py); ValueError naming the fix."""
        student = self.student.student_shape(teacher)
        check_layer_map(self.layer_map, student.n_layers if student.is_transformer() else 0, teacher.n_layers)
        return student

    @model_validator(mode="after")
    def check_losses(self):
        w = self.losses
        if not (w.logits or w.hard or w.hidden or w.attention):
            raise ValueError("every loss weight is 0; give losses.logits (and/or hard, hidden, attention) a weight")
        if self.student.kind != "transformer" and (w.hidden or w.attention):
            raise ValueError("losses.hidden and losses.attention need a transformer student; "
                             f"student.kind is {self.student.kind!r}")
        return self


def check_layer_map(layer_map: list[int] | None, n_student: int, n_teacher: int) -> None:
    """ValueError unless `layer_map` (when given) has one teacher layer per student layer, each a layer the teacher has."""
    if layer_map is not None and (len(layer_map) != n_student or not all(0 <= j < n_teacher for j in layer_map)):
        raise ValueError(f"layer_map {layer_map} needs {n_student} entries (one per student layer), each a teacher layer in "
                         f"0..{n_teacher - 1}")


def default_layer_map(n_student: int, n_teacher: int) -> list[int]:
    """Evenly spaced teacher layers, the last of each group: 2 of 4 -> [1, 3] (TinyBERT)."""
    return [round((i + 1) * n_teacher / n_student) - 1 for i in range(n_student)]


@torch.no_grad()
def init_from_teacher_(student: nn.Module, teacher: nn.Module, layer_map: list[int]) -> dict:
    """Copy teacher weights into the student, layer i from teacher layer layer_map[i], truncating
    each tensor to the student's shape (first heads, neurons, dims). Returns copy counts."""
    source = teacher.state_dict()
    counts = {"exact": 0, "truncated": 0, "fresh": 0}
    for name, param in student.state_dict().items():
        src = name
        if src.startswith("layers."):
            i, rest = src.split(".", 2)[1:]
            src = f"layers.{layer_map[int(i)]}.{rest}"
        t = source.get(src)
        if t is None or t.ndim != param.ndim or any(a < b for a, b in zip(t.shape, param.shape, strict=True)):
            counts["fresh"] += 1
            continue
        param.copy_(t[tuple(slice(0, n) for n in param.shape)])
        counts["exact" if t.shape == param.shape else "truncated"] += 1
    return counts


class Capture:
    """Forward hooks keeping the q/k/v projection outputs of chosen layers: {(layer, name): (B, T, C)}."""

    def __init__(self, model: nn.Module, layers: list[int], names=("q_proj", "k_proj", "v_proj")):
        self.out: dict = {}
        self.handles = []
        for i in layers:
            attn = model.layers[i].attn
            for name in names if attn is not None else ():
                self.handles.append(getattr(attn, name).register_forward_hook(partial(self.keep, (i, name))))

    def keep(self, key, module, inputs, output):
        self.out[key] = output

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.out.clear()


class Distiller(nn.Module):
    """The student plus what only distillation trains (hidden-state projections)."""

    def __init__(self, student: nn.Module, teacher: nn.Module, layer_map: list[int], cfg: DistillConfig):
        super().__init__()
        self.student = student
        self.proj = nn.ModuleList()
        if cfg.losses.hidden:
            s, t = student.config.dim, teacher.config.dim
            self.proj = nn.ModuleList(nn.Linear(s, t) if s != t else nn.Identity() for _ in range(len(layer_map) + 1))
        self.captured = Capture(student, list(range(len(layer_map)))) if cfg.losses.attention else None

    def forward(self, **inputs):
        return self.student(**inputs)


def distill_loss(teacher: nn.Module, layer_map: list[int], cfg: DistillConfig):
    """loss_fn(model, batch) for `train`: the weighted distillation losses of one batch."""
    w = cfg.losses
    embedding = is_embedding(teacher)
    teacher_states = bool(w.hidden or w.attention)
    captured = Capture(teacher, layer_map) if w.attention else None
    forms = [("q_proj", "k_proj")] + ([("v_proj", "v_proj")] if cfg.attention_form == "value_relation" else [])

    def loss_fn(model, batch):
        ids, mask = batch["input_ids"], batch["attention_mask"]
        distiller = getattr(model, "module", model)  # unwrap DDP
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=bool(w.hidden))
        t_logits = batch.get("teacher_logits")
        if teacher_states or t_logits is None:
            with torch.no_grad():
                t_out = teacher.to(ids.device)(input_ids=ids, attention_mask=mask, output_hidden_states=bool(w.hidden))
            t_logits = t_out.logits
        if embedding:
            loss = embedding_loss(out.logits, t_logits, cfg.embedding)
        else:
            loss = logits_loss(out.logits, t_logits, batch["labels"], w.logits, w.hard, cfg.temperature)
        if w.hidden:
            pairs = [(0, 0)] + [(i + 1, j + 1) for i, j in enumerate(layer_map)]
            parts = [hidden_loss(distiller.proj[k](out.hidden_states[i]), t_out.hidden_states[j], mask)
                     for k, (i, j) in enumerate(pairs)]
            loss = loss + w.hidden * torch.stack(parts).mean()
        if w.attention:
            parts = []
            for i, j in enumerate(layer_map):
                s_attn, t_attn = distiller.student.layers[i].attn, teacher.layers[j].attn
                if s_attn is None or t_attn is None:
                    continue
                for a, b in forms:
                    s_pair = (distiller.captured.out[(i, a)], distiller.captured.out[(i, b)])
                    t_pair = (captured.out[(j, a)], captured.out[(j, b)])
                    r = relation_heads(t_pair[0].shape[-1], s_pair[0].shape[-1], t_attn.n_heads, s_attn.n_heads)
                    parts.append(relation_loss(s_pair, t_pair, mask, r))
            if parts:
                loss = loss + w.attention * torch.stack(parts).mean()
        return loss, out.logits

    loss_fn.captured = captured  # removed by the caller after training
    return loss_fn


@register_step("distill", DistillConfig, makes_stage=True, inputs=unlabeled_inputs)
def distill(model, cfg: DistillConfig, ctx):
    teacher = ctx.teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    torch.manual_seed(ctx.recipe.seed)
    student = cfg.student.build(teacher.config)
    n_student = student.config.n_layers if cfg.student.kind == "transformer" else 0  # RNN layers map to nothing
    layer_map = cfg.layer_map if cfg.layer_map is not None else default_layer_map(n_student, teacher.config.n_layers)
    try:  # checked before the run (check_shape); here against the models themselves
        check_layer_map(cfg.layer_map, n_student, teacher.config.n_layers)
    except ValueError as e:
        raise RecipeError(f"distill {cfg.name!r}: {e}") from None
    copied = None
    if cfg.init == "teacher_layers":  # RNN students share only the token embeddings with the teacher
        target = student if n_student else student.embeddings
        copied = init_from_teacher_(target, teacher if n_student else teacher.embeddings.tok, layer_map)
    if is_embedding(teacher) and cfg.losses.hard:
        raise RecipeError(f"distill {cfg.name!r}: the teacher is a sentence-embedding model and the task has no labels: set "
                          "losses.hard: 0 (the student learns the teacher's embeddings: the `embedding:` loss)")
    split, added = transfer_set(ctx, teacher, cfg, f"distill {cfg.name}")
    distiller = Distiller(student, teacher, layer_map, cfg)
    loss_fn = distill_loss(teacher, layer_map, cfg)
    try:
        val = ctx.encoded["validation"]
        distiller, curve = train(distiller, split, val, cfg, loss_fn, seed=ctx.recipe.seed, device=ctx.device, log=ctx.log,
                                 desc=f"distill {cfg.name}", **validation(teacher, val))
    finally:
        for captured in (loss_fn.captured, distiller.captured):
            if captured is not None:
                captured.remove()
        teacher.cpu()
    ctx.record("parent", ctx.teacher_stage)  # made from the teacher, not from the stage before it (a variant's first step)
    ctx.record("train_curve", curve)
    key = score_key(teacher)
    ctx.record(key, max(p[key] for p in curve))
    details = {"student": cfg.student.kind, "layer_map": layer_map, "init": copied, **added}
    ctx.record("distill", details)
    return distiller.student.eval()
