"""The one training loop, and the `train` step that makes the teacher.

An explicit loop (nanoGPT, torchtune): AdamW, linear warm-up then cosine decay, gradient
clipping, evaluation on the validation split after every epoch, early stopping on validation
accuracy and the best checkpoint kept. It runs on `accelerate`, so the same recipe scales to
several processes with `accelerate launch` (data parallel, DDP): `batch_size` is the global
batch, each process takes every n-th example of each batch, so a recipe takes the same
optimiser steps on the same batches whatever the number of processes, and validation
predictions are gathered so every process scores, and stops on, the whole validation split.
What is optimised is a pluggable `loss_fn`: teacher training is cross-entropy, fine-tuning is
the same, distillation is another loss, masked-language modelling (`compress/steps/pretrain.py`) is
another with its own validation metrics (`evaluate`, `monitor`: lower MLM loss is better).
"""

import copy
import math
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from pydantic import Field
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler

from compress.run.config_base import NAME_PATTERN, ConfigBase, StepConfig
from compress.training.curriculum import CurriculumPhase, held_out_texts, phase_splits, phase_summary
from compress.errors import TrainingError
from compress.run.registry import STEPS, register_step

LossFn = Callable[[torch.nn.Module, dict], tuple[torch.Tensor, torch.Tensor]]
EvalFn = Callable[[torch.nn.Module, Accelerator], dict[str, float]]  # validation metrics, the same in every process


class OptimConfig(ConfigBase):
    """How a model is optimised: shared by every step that trains (train, distill, recovery)."""

    epochs: int = Field(5, ge=1, le=10000)  # passes over the training split
    batch_size: int = Field(64, ge=1, le=65536)  # examples per optimiser step, over all processes together
    lr: float = Field(1e-3, gt=0, le=1.0)  # peak learning rate of AdamW
    weight_decay: float = Field(0.01, ge=0)
    warmup: float = Field(0.1, ge=0, lt=1)  # fraction of all steps spent warming up linearly
    grad_clip: float | None = Field(1.0, gt=0)  # max gradient norm; null to disable
    patience: int | None = Field(3, ge=1)  # stop after this many epochs without a better validation score (accuracy; MLM loss)
    max_steps: int | None = Field(None, ge=1)  # stop after this many optimiser steps (smoke runs)
    # peak learning rate of the classification head (classifier*), when it should differ from `lr`: a fresh
    # head on a pretrained encoder must learn fast while the encoder moves little (discriminative
    # fine-tuning, Howard & Ruder 2018); None: the head uses `lr`
    head_lr: float | None = Field(None, gt=0, le=1.0)
    group_by_length: bool = True  # batch examples of similar length: less padding, same data per epoch


class TrainConfig(StepConfig, OptimConfig):
    """Train the teacher from scratch on the task's training split."""

    kind: Literal["train"] = "train"
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    name: str | None = Field("teacher", pattern=NAME_PATTERN)  # the stage this step makes
    # length curriculum (compress/training/curriculum.py): phases on the task redrawn at shorter inputs, trained in
    # order before the task itself; a generated long task only (lookup's long form, listops)
    curriculum: list[CurriculumPhase] = Field(default_factory=list)


def cross_entropy_loss(label_smoothing: float = 0.0) -> LossFn:
    def loss_fn(model, batch):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return F.cross_entropy(logits, batch["labels"], label_smoothing=label_smoothing), logits

    return loss_fn


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


def make_loader(split: dict, cfg: OptimConfig, seed: int, rank: int = 0, n_processes: int = 1) -> DataLoader:
    """Batches of every tensor in `split` (input_ids, attention_mask, labels, and extras such as teacher_logits).

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


def lr_lambda(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    def schedule(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return schedule


def validation_accuracy(model: torch.nn.Module, split: dict, accelerator: Accelerator) -> float:
    """Accuracy on the whole split: each process predicts a contiguous slice, the predictions are gathered."""
    n = len(split["labels"])
    k = -(-n // accelerator.num_processes)  # slice length; the last slice may be short or empty
    start = min(accelerator.process_index * k, n)
    part = {key: split[key][start : start + k] for key in ("input_ids", "attention_mask")}
    pred = predict(model, part, device=accelerator.device).argmax(-1) if start < n else torch.empty(0, dtype=torch.long)
    pred = torch.cat([pred, pred.new_full((k - len(pred),), -1)])  # (k,): gather needs equal sizes
    pred = accelerator.gather(pred.to(accelerator.device)).cpu()[:n]  # (n,) in split order: slices, then padding
    return (pred == split["labels"]).float().mean().item()


def param_groups(model: torch.nn.Module, cfg: OptimConfig) -> list[dict]:
    """AdamW's groups: matrices decay, vectors (biases, LayerNorm) do not; the head (`classifier*`) at `head_lr` when set."""
    groups: dict[tuple[bool, float], list] = {}
    for name, p in model.named_parameters():
        is_head = cfg.head_lr is not None and name.split(".")[0].startswith("classifier")
        groups.setdefault((p.ndim >= 2, cfg.head_lr if is_head else cfg.lr), []).append(p)
    return [{"params": ps, "weight_decay": cfg.weight_decay if decays else 0.0, "lr": lr} for (decays, lr), ps in groups.items()]


def train(
    model: torch.nn.Module,
    train_split: dict,
    val_split: dict,
    cfg: OptimConfig,
    loss_fn: LossFn,
    *,
    seed: int,
    device: str,
    log: Callable[..., None] = lambda **_: None,
    desc: str = "train",
    evaluate: EvalFn | None = None,
    monitor: str = "val_accuracy",
    higher_is_better: bool = True,
) -> tuple[torch.nn.Module, list[dict]]:
    """Train `model` to minimise `loss_fn`; return the best-on-validation model and its curve.

    After each epoch `evaluate(model, accelerator)` gives the validation metrics (default: accuracy
    on `val_split`); the best epoch by `monitor` is kept and early stopping watches it.
    Under `accelerate launch` every process calls this with the same arguments and gets the same model back.
    """
    if evaluate is None:
        def evaluate(m, acc):
            return {"val_accuracy": validation_accuracy(m, val_split, acc)}

    set_seed(seed)
    accelerator = Accelerator(cpu=device == "cpu")
    if cfg.batch_size < accelerator.num_processes:
        raise TrainingError(f"{desc}: batch_size {cfg.batch_size} is split over {accelerator.num_processes} processes; "
                            f"make it at least {accelerator.num_processes}")
    loader = make_loader(train_split, cfg, seed, accelerator.process_index, accelerator.num_processes)
    optimizer = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr)
    total = cfg.epochs * max(len(loader), 1)  # optimiser steps: every process takes each one
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(int(cfg.warmup * total), total))
    # the loader stays ours (it is already sharded) and the scheduler steps once per optimiser step
    model, optimizer = accelerator.prepare(model, optimizer)

    sign = 1.0 if higher_is_better else -1.0  # compare sign * metric: larger is better
    best_score, best_state, curve, stale, step = -math.inf, None, [], 0, 0
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"), TimeRemainingColumn())
    with Progress(*columns, disable=not accelerator.is_main_process, transient=False) as progress:
        bar = progress.add_task(desc, total=total, info="")
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            running, count = 0.0, 0
            for batch in loader:
                batch = {k: v.to(accelerator.device) for k, v in batch.items()}
                try:
                    loss, _ = loss_fn(model, batch)
                    if not torch.isfinite(loss):
                        raise TrainingError(
                            f"{desc}: loss became {loss.item()} at step {step + 1} (epoch {epoch}); "
                            f"lower the learning rate (lr is {cfg.lr}) or enable grad_clip"
                        )
                    optimizer.zero_grad(set_to_none=True)
                    accelerator.backward(loss)
                except torch.cuda.OutOfMemoryError:
                    raise TrainingError(
                        f"{desc}: out of GPU memory at step {step + 1} with batch_size {cfg.batch_size}; "
                        f"lower batch_size (e.g. {max(cfg.batch_size // 2, 1)}) or task.seq_len"
                    ) from None
                if cfg.grad_clip:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                scheduler.step()
                step += 1
                running, count = running + loss.item(), count + 1
                progress.update(bar, advance=1, info=f"epoch {epoch} loss {running / count:.3f}")
                if cfg.max_steps and step >= cfg.max_steps:
                    break
            unwrapped = accelerator.unwrap_model(model)
            metrics = evaluate(unwrapped, accelerator)  # the same in every process: all stop together
            train_loss = running / max(count, 1)
            if accelerator.num_processes > 1:  # the mean over every process's batches
                train_loss = accelerator.reduce(torch.tensor(train_loss, device=accelerator.device), "mean").item()
            point = {"epoch": epoch, "step": step, "train_loss": round(train_loss, 5),
                     **{k: round(v, 5) for k, v in metrics.items()}, "lr": scheduler.get_last_lr()[0]}
            curve.append(point)
            log(event="epoch", **point)
            progress.update(bar, info=f"epoch {epoch} loss {point['train_loss']:.3f} {monitor} {metrics[monitor]:.3f}")
            if sign * metrics[monitor] > best_score:
                best_score, stale = sign * metrics[monitor], 0
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in unwrapped.state_dict().items()})
            else:
                stale += 1
            if (cfg.patience and stale >= cfg.patience) or (cfg.max_steps and step >= cfg.max_steps):
                break
    model = accelerator.unwrap_model(model).cpu()
    model.load_state_dict(best_state)
    accelerator.free_memory()
    return model.eval(), curve


@register_step("train", TrainConfig, makes_stage=True, needs_model=False)
def train_teacher(model, cfg: TrainConfig, ctx):
    """Train the teacher with cross-entropy: built from the recipe's `teacher:` shape, or, with
    `teacher.from`, the imported pretrained checkpoint fine-tuned on the task (its encoder and head),
    or, right after a `pretrain` step, that stage's pretrained encoder (and fresh head) fine-tuned."""
    from compress.models import SlimformerForSequenceClassification

    origin = ctx.stage_origins.get(ctx.stage)
    if origin is not None and STEPS[ctx.stage_kinds[origin]].pretrains:
        model = copy.deepcopy(model)  # the pretrained stage's model; its tokenizer is this stage's too (inherited)
        ctx.record("pretrained", origin)
        if ctx.imported is not None:  # the pretrained stage continued the imported checkpoint's pretraining
            ctx.record("imported", ctx.imported.info)
    elif ctx.imported is not None:
        model = copy.deepcopy(ctx.imported.model)
        ctx.record("imported", ctx.imported.info)
    else:
        config = ctx.recipe.teacher.build_config(len(ctx.tokenizer), ctx.recipe.task.seq_len, ctx.data.label_names)
        torch.manual_seed(ctx.recipe.seed)
        model = SlimformerForSequenceClassification(config)
    if cfg.curriculum:
        model = train_curriculum(model, cfg.curriculum, cfg, cross_entropy_loss(cfg.label_smoothing), ctx, f"train {cfg.name}")
    model, curve = train(
        model,
        ctx.encoded["train"],
        ctx.encoded["validation"],
        cfg,
        cross_entropy_loss(cfg.label_smoothing),
        seed=ctx.recipe.seed,
        device=ctx.device,
        log=ctx.log,
        desc=f"train {cfg.name}",
    )
    ctx.record("train_curve", curve)
    ctx.record("val_accuracy", max(p["val_accuracy"] for p in curve))
    return model


def train_curriculum(model, phases: list[CurriculumPhase], cfg: OptimConfig, loss_fn: LossFn, ctx, desc: str):
    """Train `model` through a length curriculum's phases in order, each with `cfg` for its own epochs;
    the task itself comes after (the caller). Records what each phase did as the stage's `curriculum`."""
    held_out = held_out_texts(ctx.data)
    done = []
    for i, phase in enumerate(phases):
        splits = phase_splits(ctx.recipe.task, phase, ctx.recipe.seed, ctx.base_dir, ctx.tokenizer, held_out)
        model, curve = train(
            model,
            splits["train"],
            splits["validation"],
            cfg.model_copy(update={"epochs": phase.epochs}),
            loss_fn,
            seed=ctx.recipe.seed + 1 + i,  # each phase its own shuffling
            device=ctx.device,
            log=lambda **m: ctx.log(phase=i, **m),
            desc=f"{desc} {phase.min_length}-{phase.max_length} tokens",
        )
        done.append(phase_summary(phase, splits, curve))
    ctx.record("curriculum", done)
    return model
