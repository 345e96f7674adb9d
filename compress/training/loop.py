"""The one training loop: every step that trains (train, distill, recovery, pretrain) runs `train()`.

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
from collections.abc import Callable

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from pydantic import Field
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from compress.errors import TrainingError
from compress.run.config_base import ConfigBase
from compress.training.batches import make_loader, predict
from compress.training.curriculum import CurriculumPhase, held_out_texts, phase_splits, phase_summary

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


def cross_entropy_loss(label_smoothing: float = 0.0) -> LossFn:
    def loss_fn(model, batch):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return F.cross_entropy(logits, batch["labels"], label_smoothing=label_smoothing), logits

    return loss_fn


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
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
               TimeRemainingColumn())
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
            log=lambda phase=i, **m: ctx.log(phase=phase, **m),  # phase bound now, not read when called
            desc=f"{desc} {phase.min_length}-{phase.max_length} tokens",
        )
        done.append(phase_summary(phase, splits, curve))
    ctx.record("curriculum", done)
    return model
