"""The `pretrain` step: masked-language modelling on raw text before `train` (stage "pretrained").

BERT's self-supervised pretraining (Devlin et al. 2019): a share `mask_prob` of the tokens is
chosen, 80% of those become `[MASK]`, 10% a random token, 10% stay, and the encoder learns to
predict the originals through an MLM head (dense + activation + LayerNorm, then the input
embedding matrix as decoder: weights tied, Press & Wolf 2017). Masks are drawn anew every time
a text is seen (dynamic masking, RoBERTa, Liu et al. 2019); with `whole_word` every piece of a
chosen word is masked together (BERT's whole-word masking; `##` WordPiece and `\u2581` BPE pieces).

The text is the task's own (train and validation splits, labels ignored: self-pretraining,
Krishna et al. 2022, "Downstream Datasets Make Surprisingly Good Pretraining Corpora"; test
texts only with `use_test_texts`), `corpus:` files (`compress/data/unlabeled.py`: .txt one text a
line, or .csv/.tsv/.jsonl/.json/.parquet with a text column; task-adaptive pretraining,
Gururangan et al. 2020) and shipped corpora (`builtin: [wordnet]`, the WordNet 3.0 glosses). The
step trains its own tokenizer on those texts, so pretraining and fine-tuning share one
vocabulary: the `train` step that follows inherits it with the encoder. The MLM head is dropped
after pretraining: the stage is a plain `SlimformerForSequenceClassification` (fresh classifier
head), reloads with `from_pretrained`, and is never the teacher. Training runs in the one loop,
`compress.training.loop.train`, with the MLM loss and masked-token validation metrics.

After `teacher.from` (an imported checkpoint) the step continues that checkpoint's pretraining
on the texts instead (task-adaptive pretraining, Gururangan et al. 2020): the encoder starts from
the checkpoint's weights, the checkpoint's own tokenizer is kept (no new vocabulary, so its
embeddings keep their meaning), and the MLM head is the checkpoint's when it ships one
(BERT/RoBERTa/DistilBERT `...ForMaskedLM`, `compress.models.import_hf.read_mlm_head`), else fresh.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from compress.errors import CheckpointError, RecipeError
from compress.run.config_base import NAME_PATTERN, StepConfig
from compress.run.registry import STEPS, file_digest, register_step
from compress.training.batches import trim
from compress.training.loop import OptimConfig, train


def wordnet_glosses() -> tuple[list[str], str]:
    from compress.data.wordnet import read_glosses

    rows, digest = read_glosses()
    return [r[3] for r in rows], digest


BUILTIN = {"wordnet": wordnet_glosses}  # name -> () -> (texts, digest of the shipped file)


class PretrainConfig(StepConfig, OptimConfig):
    """Pretrain the teacher's encoder with masked-language modelling; a `train` step must follow."""

    kind: Literal["pretrain"] = "pretrain"
    name: str | None = Field("pretrained", pattern=NAME_PATTERN)  # the stage this step makes
    # extra unlabelled text: .txt one text a line, or .csv .tsv .jsonl .json .parquet; relative to the recipe's folder
    corpus: list[str] = Field(default_factory=list)
    corpus_column: str = "text"  # the column holding the texts in a .csv/.tsv/.jsonl/.json/.parquet corpus file
    use_task_texts: bool = True  # the texts of the task's train and validation splits (labels ignored)
    use_test_texts: bool = False  # the test split's texts too (transductive: off keeps test accuracy honest)
    builtin: list[Literal[tuple(BUILTIN)]] = Field(default_factory=list)  # shipped corpora: wordnet (WordNet 3.0 glosses)
    mask_prob: float = Field(0.15, gt=0, lt=1)  # share of the tokens (words, with whole_word) chosen for prediction
    whole_word: bool = True  # mask every piece of a chosen word together
    max_texts: int | None = Field(None, ge=2)  # a seeded sample of at most this many pretraining texts (None: all)
    validation_fraction: float = Field(0.05, gt=0, lt=0.5)  # held-out texts for the MLM validation loss (early stopping)
    lr: float = Field(5e-4, gt=0, le=1.0)  # peak learning rate of AdamW
    epochs: int = Field(10, ge=1, le=10000)  # passes over the pretraining texts

    @model_validator(mode="after")
    def check_corpus(self):
        from compress.data.unlabeled import check_suffixes

        check_suffixes(self.corpus, "corpus")
        if not (self.corpus or self.use_task_texts or self.builtin):
            raise ValueError("no text to pretrain on: set use_task_texts: true, or give corpus: files or builtin: [wordnet]")
        return self

    def check_files(self, base_dir: Path | None) -> None:
        """Read every corpus file (the runner calls this before anything is written): a DataError naming a missing or
        empty one."""
        from compress.data.unlabeled import read_unlabeled

        for path in self.corpus:
            read_unlabeled(path, self.corpus_column, base_dir, column_field="corpus_column")

    def check_recipe(self, steps: list, index: int) -> None:
        later = [s for s in steps[index + 1 :] if STEPS[s.kind].makes_stage]
        if not later or later[0].kind != "train":
            raise ValueError(f"steps[{index}] (pretrain) makes an encoder without a trained head: put a `train` step right "
                             "after it (before any step that makes another stage)")


def corpus_inputs(cfg: PretrainConfig, ctx) -> dict:
    """The corpus files' and shipped corpora's digests: part of the step's fingerprint."""
    from compress.data.unlabeled import unlabeled_path

    return {"corpus": [file_digest(unlabeled_path(p, ctx.base_dir)) for p in cfg.corpus],
            "builtin": [BUILTIN[name]()[1] for name in cfg.builtin]}


def pretraining_texts(cfg: PretrainConfig, ctx) -> list[str]:
    """Task texts, corpus files and shipped corpora, in that order; the test split's texts are removed
    from all of them unless `use_test_texts` (a shipped corpus may hold the task's own test texts)."""
    from compress.data.limits import max_text_chars
    from compress.data.unlabeled import read_unlabeled

    texts = []
    if cfg.use_task_texts:
        texts += ctx.data.texts["train"] + ctx.data.texts["validation"]
    for path in cfg.corpus:
        texts += read_unlabeled(path, cfg.corpus_column, ctx.base_dir, column_field="corpus_column",
                                max_chars=max_text_chars(ctx.recipe.task.seq_len))[0]
    for name in cfg.builtin:
        texts += BUILTIN[name]()[0]
    if cfg.use_test_texts:
        texts += ctx.data.texts["test"]
    else:
        test = set(ctx.data.texts["test"])
        texts = [t for t in texts if t not in test]
    if cfg.max_texts is not None and len(texts) > cfg.max_texts:
        keep = torch.randperm(len(texts), generator=torch.Generator().manual_seed(ctx.recipe.seed))[: cfg.max_texts]
        texts = [texts[i] for i in sorted(keep.tolist())]
    return texts


def continuation_ids(tokenizer, size: int | None = None) -> torch.Tensor:
    """(V,) bool: tokens that continue the word before them (WordPiece `##x`; a BPE piece without the
    word-start `\u2581`, or without GPT-2/RoBERTa's `\u0120` (a byte-level space))."""
    vocab = tokenizer.get_vocab()
    out = torch.zeros(size or len(tokenizer), dtype=torch.bool)  # size: the model's vocab_size (an imported one may exceed len)
    special = set(tokenizer.all_special_tokens)
    if any(t.startswith("##") for t in vocab):
        pieces = [(i, t.startswith("##")) for t, i in vocab.items()]
    elif any(t.startswith("\u2581") for t in vocab):
        pieces = [(i, t not in special and not t.startswith("\u2581")) for t, i in vocab.items()]
    elif sum(t.startswith("\u0120") for t in vocab) > len(vocab) // 10:  # byte-level BPE: "Ġword" starts a word
        pieces = [(i, t not in special and not t.startswith("\u0120") and t.isalnum()) for t, i in vocab.items()]
    else:  # char tokenizer: every token is a word of its own
        pieces = []
    for i, continues in pieces:
        out[i] = continues
    return out


def special_ids(tokenizer, size: int | None = None) -> torch.Tensor:
    """(V,) bool: special tokens ([PAD], [CLS], [SEP], ...), never masked and never drawn as random replacements."""
    out = torch.zeros(size or len(tokenizer), dtype=torch.bool)
    out[tokenizer.all_special_ids] = True
    return out


def mask_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor, special: torch.Tensor, continues: torch.Tensor | None,
                mask_id: int, mask_prob: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking of a batch: (masked input_ids (B, T), labels (B, T): the original id where chosen, else -100).

    Chosen tokens are 80% `[MASK]`, 10% a random non-special token, 10% unchanged. Special and
    padding tokens are never chosen. With `continues` ((V,) bool), a word is chosen as a whole:
    each piece takes the draw of the first piece of its word."""
    B, T = input_ids.shape
    special = special.to(input_ids.device)
    continues = continues.to(input_ids.device) if continues is not None else None
    maskable = attention_mask.bool() & ~special[input_ids]  # (B, T)
    draw = torch.rand((B, T), generator=generator).to(input_ids.device)
    if continues is not None:
        starts = ~continues[input_ids] | ~maskable  # (B, T): a word begins here
        positions = torch.arange(T, device=input_ids.device).expand(B, T)
        first = torch.where(starts, positions, torch.zeros_like(positions)).cummax(dim=1).values  # (B, T): its word's first piece
        draw = draw.gather(1, first)
    chosen = (draw < mask_prob) & maskable
    if not chosen.any() and maskable.any():  # a batch with nothing to predict has no loss: take its first maskable token
        chosen.view(-1)[maskable.view(-1).nonzero()[0]] = True
    how = torch.rand((B, T), generator=generator).to(input_ids.device)  # 80% [MASK], 10% random, 10% kept
    normal = (~special).nonzero().squeeze(1).to(input_ids.device)  # (V',) ids a random replacement may take
    random_ids = normal[torch.randint(len(normal), (B, T), generator=generator).to(input_ids.device)]
    masked = torch.where(chosen & (how < 0.8), torch.full_like(input_ids, mask_id), input_ids)
    masked = torch.where(chosen & (how >= 0.8) & (how < 0.9), random_ids, masked)
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    return masked, labels


class MaskedLM(nn.Module):
    """The classifier's encoder plus an MLM head whose decoder is the input embedding matrix (tied)."""

    def __init__(self, model: nn.Module):
        from compress.models.modeling_slimformer import ACTIVATIONS

        super().__init__()
        self.model = model
        config = model.config
        width = model.get_input_embeddings().weight.shape[1]  # embed_dim when the tables are narrower than dim
        self.dense = nn.Linear(config.dim, width)
        self.act = ACTIVATIONS[config.activation]()  # the encoder's (BERT's head uses hidden_act)
        self.norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, V); with `labels` ((B, T), -100 where nothing is predicted) only the M predicted tokens' (M, V).

        Sparse prediction (Geiping & Goldstein 2022, "Cramming"): the head and the (width x V) decoder
        run on the ~15% of tokens that have a loss, the same loss for a fraction of the FLOPs (with an
        8,000-word vocabulary at dim 128 the decoder over every token costs more than the encoder)."""
        x = self.model.encode(input_ids, attention_mask)  # (B, T, dim)
        if labels is not None:
            x = x[labels != -100]  # (M, dim)
        x = self.norm(self.act(self.dense(x)))  # (..., width)
        return F.linear(x, self.model.get_input_embeddings().weight, self.bias)  # (B, T, V) or (M, V)


def mlm_loss(special: torch.Tensor, continues: torch.Tensor | None, mask_id: int, mask_prob: float, seed: int):
    """loss_fn(model, batch) for `train`: cross-entropy on freshly masked tokens (a new mask every time: dynamic masking)."""
    generator = torch.Generator().manual_seed(seed)

    def loss_fn(model, batch):
        masked, labels = mask_tokens(batch["input_ids"], batch["attention_mask"], special, continues, mask_id, mask_prob,
                                     generator)
        logits = model(input_ids=masked, attention_mask=batch["attention_mask"], labels=labels)  # (M, V): the chosen tokens'
        return F.cross_entropy(logits, labels[labels != -100]), logits

    return loss_fn


def mlm_evaluator(split: dict, special: torch.Tensor, continues: torch.Tensor | None, mask_id: int, mask_prob: float, seed: int,
                  batch_size: int = 256):
    """evaluate(model, accelerator) for `train`: MLM loss and masked-token accuracy on held-out texts with masks fixed once."""
    masked, labels = mask_tokens(split["input_ids"], split["attention_mask"], special, continues, mask_id, mask_prob,
                                 torch.Generator().manual_seed(seed + 1))

    @torch.no_grad()
    def evaluate(model, accelerator) -> dict[str, float]:
        was_training = model.training
        model.eval()
        total, correct, count = 0.0, 0, 0
        for start in range(0, len(masked), batch_size):
            ids, mask = trim(masked[start : start + batch_size], split["attention_mask"][start : start + batch_size])
            target = labels[start : start + batch_size, : ids.shape[1]].to(accelerator.device)  # (b, t)
            logits = model(input_ids=ids.to(accelerator.device), attention_mask=mask.to(accelerator.device),
                           labels=target).float()  # (m, V): the chosen tokens'
            chosen = target[target != -100]  # (m,)
            total += F.cross_entropy(logits, chosen, reduction="sum").item()
            correct += int((logits.argmax(-1) == chosen).sum())
            count += len(chosen)
        model.train(was_training)
        return {"val_mlm_loss": total / max(count, 1), "val_masked_accuracy": correct / max(count, 1)}

    return evaluate


@register_step("pretrain", PretrainConfig, makes_stage=True, needs_model=False, sets_tokenizer=True, pretrains=True,
               inputs=corpus_inputs)
def pretrain(model, cfg: PretrainConfig, ctx):
    """Train a tokenizer and the teacher's encoder (recipe `teacher:` shape) on the pretraining texts with MLM;
    after `teacher.from`, continue the imported checkpoint's pretraining in its own vocabulary."""
    from compress.data import encode, train_tokenizer
    from compress.models import SlimformerForSequenceClassification

    recipe, seq_len = ctx.recipe, ctx.recipe.task.seq_len
    texts = pretraining_texts(cfg, ctx)
    if len(texts) < 2:
        raise RecipeError(f"pretrain: {len(texts)} text(s) to pretrain on; give corpus: files, builtin: [wordnet] "
                          "or use_task_texts: true")
    if ctx.imported is not None:  # task-adaptive pretraining: the checkpoint's weights and vocabulary
        tokenizer = ctx.tokenizer
        if tokenizer.mask_token_id is None:
            raise RecipeError(f"pretrain: the tokenizer of teacher.from ({ctx.imported.info['folder']}) has no mask token, so "
                              "masked-language modelling cannot mask; remove the pretrain step or use a checkpoint with [MASK]")
        encoder = copy.deepcopy(ctx.imported.model)
    else:
        tokenizer = train_tokenizer(texts, recipe.task.tokenizer, seq_len)
        config = recipe.teacher.build_config(len(tokenizer), seq_len, ctx.data.label_names)
        torch.manual_seed(recipe.seed)
        encoder = SlimformerForSequenceClassification(config)
    ctx.set_tokenizer(tokenizer)
    encoded = encode(tokenizer, texts, seq_len)
    order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(recipe.seed))
    n_val = min(max(1, round(cfg.validation_fraction * len(texts))), 2000)
    splits = {name: {k: encoded[k][rows] for k in ("input_ids", "attention_mask")}
              for name, rows in (("validation", order[:n_val]), ("train", order[n_val:]))}

    size = encoder.config.vocab_size  # the embedding rows, what the MLM head scores (len(tokenizer) may differ when imported)
    special = special_ids(tokenizer, size)
    continues = continuation_ids(tokenizer, size) if cfg.whole_word else None
    if ctx.imported is None:
        wrapped = MaskedLM(encoder)  # its head's init continues the seeded stream the encoder was drawn from
    else:
        torch.manual_seed(recipe.seed)  # a fresh head when the checkpoint has none, else replaced by the checkpoint's
        wrapped = load_mlm_head_(MaskedLM(encoder), ctx)
    wrapped, curve = train(
        wrapped,
        splits["train"],
        splits["validation"],
        cfg,
        mlm_loss(special, continues, tokenizer.mask_token_id, cfg.mask_prob, recipe.seed),
        seed=recipe.seed,
        device=ctx.device,
        log=ctx.log,
        desc=f"pretrain {cfg.name}",
        evaluate=mlm_evaluator(splits["validation"], special, continues, tokenizer.mask_token_id, cfg.mask_prob, recipe.seed),
        monitor="val_mlm_loss",
        higher_is_better=False,
    )
    best = min(curve, key=lambda p: p["val_mlm_loss"])
    ctx.record("train_curve", curve)
    ctx.record("val_mlm_loss", best["val_mlm_loss"])
    ctx.record("val_masked_accuracy", best["val_masked_accuracy"])
    ctx.record("pretrain_texts", len(texts))
    ctx.record("pretrain_tokens", int(encoded["attention_mask"].sum()))
    ctx.record("parent", None)  # made from text (and a checkpoint), not from the stage before it
    return wrapped.model  # the MLM head is dropped: a plain classifier with a fresh head, for `train` to fine-tune


def load_mlm_head_(wrapped: MaskedLM, ctx) -> MaskedLM:
    """Start the MLM head from the imported checkpoint's, when it has one; record which it is; return `wrapped`."""
    from compress.models.import_hf import read_mlm_head

    folder = ctx.imported.info["folder"]
    head, reason = read_mlm_head(folder)
    if head is not None:
        state = wrapped.state_dict()
        wrong = {k: (tuple(v.shape), tuple(state[k].shape)) for k, v in head.items() if v.shape != state[k].shape}
        if wrong:
            raise CheckpointError(f"{folder}: the masked-LM head's shapes {wrong} (checkpoint, expected) do not fit the encoder; "
                                  "config.json and the weights disagree")
        wrapped.load_state_dict(state | head)
    ctx.record("continued_from", folder)
    ctx.record("mlm_head", reason)
    return wrapped
