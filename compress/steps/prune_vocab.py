"""The `prune_vocab` step: keep only the embedding rows of tokens the task uses, and shrink the tokenizer to match.

A pretrained checkpoint carries a vocabulary of 30k-250k tokens, most of which a given task never
produces; their rows dominate the embedding table and often the whole artifact. As TextPruner does
(Yang et al. 2022, "TextPruner: A Model Pruning Toolkit for Pre-Trained Language Models",
vocabulary pruning), the step tokenizes every text of the task (all splits, plus `extra_texts`
files such as an unlabelled transfer set), keeps the tokens that occur and every special or added
token, and renumbers them in their original order. The embedding table keeps those rows
(`config.vocab_size` and `config.pad_token_id` are updated in the same function, STYLE.md rule 7)
and the tokenizer is rebuilt with the same normalizer, pre-tokenizer, decoder and post-processor
(its special-token ids renumbered), so every text of the task gets the same tokens as before, now
with new ids, and the model computes exactly the same logits. A token outside the kept set
becomes the unknown token.

Tokenizing with a smaller vocabulary gives the same pieces only if the pieces a tokenizer tried
are kept too, so some tokens that never appear in the output are kept as well:
- WordPiece matches greedily, longest first; a word that ends as [UNK] may have matched pieces
  before it failed, and without them a shorter piece could let it succeed. Those pieces are kept.
- BPE merges pairs; every merge that builds a kept token, and its two parts, are kept (the merge
  list is filtered to merges whose parts and result all remain), so each word merges the same way.
- WordLevel and Unigram need nothing more: a word either is in the vocabulary or not, and
  Unigram's best segmentation stays available and best.
The step then checks that every text's new ids are exactly the old ids renumbered, for every
split, and that the validation logits are unchanged; either failing is an error, never a silent
change. Token ids change, so later stages of this lineage use this stage's tokenizer (RunContext
carries it), and no later step may train against the teacher on inputs it would read in the new ids
(distill, a recovery with augment/unlabeled copies or attention outputs): a plain recovery after a
later cut distils the teacher's outputs on the task's texts, computed from the run's own ids, row for
row, so it may follow (and relearn what a `max_size` cap changed).

`max_size` is a size budget instead: the table keeps at most that many rows, the ones the texts
use most (WordNet's 93,600 training texts use 22,664 of MiniLM's 30,522 tokens; capped at 16,000,
16% of the held-out texts split differently), plus every special token and every single character
in both WordPiece forms (`x`, `##x`), so a word whose pieces were dropped splits into smaller kept
pieces instead of becoming [UNK]. Only texts that used a dropped token change: the step counts them per
split (`retokenized` in the record) and checks the others as above.
"""

import copy
import json
import re
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from compress.data.limits import max_text_chars
from compress.errors import RecipeError
from compress.run.config_base import StepConfig
from compress.run.registry import STEPS, file_digest, register_step
from compress.training.batches import predict

SUPPORTED = ("WordPiece", "BPE", "WordLevel", "Unigram")


class PruneVocabConfig(StepConfig):
    """Drop the embedding rows (and tokenizer entries) of tokens the task's texts never use."""

    kind: Literal["prune_vocab"] = "prune_vocab"
    # files whose tokens are kept too, e.g. distill's `unlabeled:` transfer set: .txt (one text a line) or a
    # text column of .csv/.tsv/.jsonl/.json/.parquet (compress/data/unlabeled.py); relative to the recipe's folder
    extra_texts: list[str] = Field(default_factory=list)
    extra_texts_column: str = "text"  # the column holding the texts in a .csv/.tsv/.jsonl/.json/.parquet file
    atol: float = Field(1e-6, gt=0)  # max |logits_pruned - logits_original| allowed on the validation split
    # the task's splits whose tokens are kept (and checked to tokenize as before); leave test out to keep the vocabulary
    # blind to the test texts (`slimformer compress` does): a test token outside it then reads as the unknown token
    splits: list[Literal["train", "validation", "test"]] = Field(["train", "validation", "test"], min_length=1)
    # at most this many tokens (a size budget): the special tokens, every single character (so a word whose pieces were
    # dropped splits into smaller pieces, not [UNK]), then the most frequent tokens of the texts; a text that used a
    # dropped token is tokenized anew, which changes its logits (counted in the record). None: every token the texts use
    max_size: int | None = Field(None, ge=8)

    @model_validator(mode="after")
    def check_suffixes(self):
        from compress.data.unlabeled import check_suffixes

        check_suffixes(self.extra_texts, "extra_texts")
        if "validation" not in self.splits:
            raise ValueError(f"splits {self.splits} must include validation: the step checks the logits there; "
                             f"use splits: {sorted({*self.splits, 'validation'})}")
        return self

    def check_files(self, base_dir: Path | None) -> None:
        """Called before the run starts: every extra_texts file reads and holds text."""
        read_texts(self.extra_texts, self.extra_texts_column, base_dir)

    def check_recipe(self, steps: list, index: int) -> None:
        """Called by the recipe validator: no later step that starts from this stage or its descendants (their
        tokenizer is the pruned one) trains against the teacher, nor does a later `train`. A step whose `parent:`
        is a stage from before this one reads the original vocabulary and may distil."""
        descendants, current = {self.name}, self.name
        for j in range(index + 1, len(steps)):
            step = steps[j]
            source = getattr(step, "parent", None) or current
            reason = teacher_use(step)
            if reason and (step.kind == "train" or getattr(step, "source", None) == "teacher" or source in descendants):
                raise ValueError(
                    f"steps[{j}] ({step.kind} {step.name!r}) {reason}, after steps[{index}] (prune_vocab {self.name!r}) "
                    "renumbered the vocabulary: the teacher reads the original token ids, not the pruned ones. Put prune_vocab "
                    "after every step that trains against the teacher (late, just before quantize)"
                    + (", or drop its recover's augment/unlabeled/attention_output"
                       if getattr(step, "recover", None) is not None else "")
                    + (f", or start it from a stage before {self.name!r} with `parent:`" if hasattr(step, "parent") else ""))
            if STEPS[step.kind].makes_stage:
                if source in descendants:
                    descendants.add(step.name)
                current = step.name


def teacher_use(step) -> str | None:
    """How a step config trains against (or starts from) the teacher or its vocabulary, or None: distill, recovery
    that distils, a swap of the teacher's model, train (the recipe's teacher, or the imported checkpoint)."""
    if step.kind == "distill":
        return "distils from the teacher"
    if step.kind == "train":
        return "trains the recipe's teacher (its vocabulary is the original one)"
    if getattr(step, "source", None) == "teacher":
        return "starts from the teacher's model"
    recover = getattr(step, "recover", None)
    # a plain recovery reads the teacher's outputs on the task's own texts, computed from the run's ids (recover.py);
    # extra copies or texts, and attention states, would feed the teacher this stage's ids
    if (recover is not None and recover.epochs > 0 and recover.distill_from == "teacher"
            and (recover.adds() or getattr(recover, "attention_output", 0))):
        return ("recovers by distilling from the teacher on inputs it would read in the pruned ids (augment/unlabeled "
                "copies or attention_output)")
    return None


# --------------------------------------------------------------------------- which tokens stay


def read_texts(paths: list[str], column: str, base_dir: Path | None, max_chars: int | None = None) -> list[str]:
    """The texts of every file (compress/data/unlabeled.py reads them; errors name the file), cut to `max_chars`."""
    from compress.data.unlabeled import read_unlabeled

    return [t for path in paths
            for t in read_unlabeled(path, column, base_dir, column_field="extra_texts_column", max_chars=max_chars)[0]]


def plain_backend(tokenizer):
    """A private copy of the tokenizer's `tokenizers.Tokenizer` without truncation or padding: whole texts."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_truncation()
    backend.no_padding()
    return backend


def words_of(backend, texts: list[str], added: list[str]) -> set[str]:
    """The pre-tokenized words the tokenizer's model sees in `texts` (added tokens split off first)."""
    split = re.compile("|".join(re.escape(t) for t in sorted(added, key=len, reverse=True))) if added else None
    words = set()
    for text in texts:
        for part in split.split(text) if split else [text]:
            if backend.normalizer is not None:
                part = backend.normalizer.normalize_str(part)
            pieces = backend.pre_tokenizer.pre_tokenize_str(part) if backend.pre_tokenizer is not None else [(part, None)]
            words.update(w for w, _ in pieces)
    return words


def wordpiece_tried(model: dict, words: set[str]) -> set[str]:
    """Every piece WordPiece's greedy longest-match takes in `words`, including pieces of words that end as [UNK]."""
    vocab, prefix, limit = (model["vocab"], model.get("continuing_subword_prefix") or "",
                            model.get("max_input_chars_per_word", 100))
    tried = set()
    for word in words:
        if len(word) > limit:
            continue
        start = 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = (prefix if start else "") + word[start:end]
                if piece in vocab:
                    tried.add(piece)
                    break
            else:
                break  # no piece fits here: the word becomes [UNK]
            start = end
    return tried


def bpe_merges(model: dict) -> list[tuple[str, str]]:
    return [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in model["merges"]]


def bpe_result(model: dict, a: str, b: str) -> str:
    prefix = model.get("continuing_subword_prefix") or ""
    return a + b[len(prefix):]  # as tokenizers' BPE builds a merge's token


def bpe_makers(model: dict) -> dict[str, list[tuple[str, str]]]:
    """Each token built by a merge -> the merges (pairs of parts) that build it."""
    makers: dict[str, list[tuple[str, str]]] = {}
    for a, b in bpe_merges(model):
        makers.setdefault(bpe_result(model, a, b), []).append((a, b))
    return makers


def bpe_closure(model: dict, kept: set[str], makers: dict | None = None) -> set[str]:
    """`kept` plus both parts of every merge that builds a kept token, recursively."""
    makers = bpe_makers(model) if makers is None else makers
    todo, closed = list(kept), set(kept)
    while todo:
        for pair in makers.get(todo.pop(), []):
            for part in pair:
                if part not in closed:
                    closed.add(part)
                    todo.append(part)
    return closed


def kept_ids(tokenizer, texts: list[str], also: tuple[int, ...] = ()) -> list[int]:
    """Old ids to keep, ascending: every token of `texts`, every special and added token, the model's unknown
    token, what the model tried, and `also` (ids of the tokenizer, e.g. the model's pad id)."""
    backend = plain_backend(tokenizer)
    model = json.loads(backend.to_str())["model"]
    if model["type"] not in SUPPORTED:
        raise RecipeError(f"prune_vocab: the tokenizer's model is {model['type']}; "
                          f"prune_vocab rebuilds {', '.join(SUPPORTED)} tokenizers")
    vocab = tokenizer.get_vocab()  # token -> id, added tokens included
    keep = {i for e in backend.encode_batch(list(texts), add_special_tokens=True) for i in e.ids}
    added = [t.content for t in tokenizer.added_tokens_decoder.values()]
    keep |= {vocab[t] for t in added} | set(tokenizer.all_special_ids) | (set(also) & set(vocab.values()))
    unk = model.get("unk_token") if model["type"] != "Unigram" else model.get("unk_id")
    if unk is not None:
        keep.add(unk if isinstance(unk, int) else vocab[unk])
    if model["type"] == "WordPiece":
        keep |= {vocab[t] for t in wordpiece_tried(model, words_of(backend, texts, added))}
    elif model["type"] == "BPE":
        keep |= {vocab[t] for t in bpe_closure(model, {backend.id_to_token(i) for i in keep}) if t in vocab}
    return sorted(keep)


def frequent_ids(tokenizer, texts: list[str], keep: list[int], max_size: int, also: tuple[int, ...] = ()) -> list[int]:
    """At most `max_size` ids, ascending: every special and added token, the unknown token, `also` and the piece of each
    character of the texts (WordPiece's `##c` too: any word of those characters still tokenizes), then ids of `keep` by
    how often the texts use them (ties: lower id first); a BPE token comes with the merges' parts that build it
    (`bpe_closure`), or not at all."""
    from collections import Counter

    backend = plain_backend(tokenizer)
    model = json.loads(backend.to_str())["model"]
    prefix = model.get("continuing_subword_prefix") or ""
    vocab = tokenizer.get_vocab()  # token -> id, added tokens included
    old = {i: t for t, i in vocab.items()}
    added = set(tokenizer.added_tokens_decoder)
    unk = model.get("unk_token") if model["type"] != "Unigram" else model.get("unk_id")
    unk_id = unk if isinstance(unk, int) else vocab.get(unk) if unk is not None else None
    chars = set("".join(words_of(backend, texts, [tokenizer.added_tokens_decoder[i].content for i in added])))
    single = {vocab[p] for c in chars for p in (c, prefix + c if prefix else c) if p in vocab}
    required = (set(tokenizer.all_special_ids) | added | set(also) | single | {unk_id}) & set(vocab.values())
    if len(required) > max_size:
        raise RecipeError(f"prune_vocab: max_size {max_size} is below the {len(required)} tokens every text may need (special "
                          f"tokens and single characters); raise max_size to at least {len(required)}")
    counts = Counter(i for e in backend.encode_batch(list(texts), add_special_tokens=True) for i in e.ids)
    makers = bpe_makers(model) if model["type"] == "BPE" else {}
    chosen = set(required)
    for i in sorted(set(keep) - required, key=lambda i: (-counts[i], i)):
        if i in chosen:
            continue
        add = {i} if model["type"] != "BPE" else {vocab[t] for t in bpe_closure(model, {old[i]}, makers) if t in vocab}
        if len(chosen | add) <= max_size:
            chosen |= add
        if len(chosen) == max_size:
            break
    return sorted(chosen)


# --------------------------------------------------------------------------- the new tokenizer and model


def renumber_processor(node, new_vocab: dict[str, int]):
    """The post-processor's JSON with every special token's id replaced by its new id (Template, Bert, Roberta, Sequence)."""
    if isinstance(node, list):
        if len(node) == 2 and isinstance(node[0], str) and isinstance(node[1], int):  # Bert/RobertaProcessing: [token, id]
            return [node[0], new_vocab[node[0]]]
        return [renumber_processor(n, new_vocab) for n in node]
    if isinstance(node, dict):
        out = {k: renumber_processor(v, new_vocab) for k, v in node.items()}
        if "ids" in node and "tokens" in node:  # TemplateProcessing's special_tokens entries
            out["ids"] = [new_vocab[t] for t in node["tokens"]]
        return out
    return node


def rebuild_tokenizer(tokenizer, keep: list[int]):
    """A PreTrainedTokenizerFast holding only the tokens `keep` (old ids, ascending), renumbered 0..len(keep)-1 in that order."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec["model"]
    old = {i: t for t, i in tokenizer.get_vocab().items()}
    new_id = {o: n for n, o in enumerate(keep)}
    new_vocab = {old[o]: n for o, n in new_id.items()}  # token -> new id
    if model["type"] == "Unigram":
        pieces = {p[0]: p for p in model["vocab"]}
        if any(new_vocab[t] != n for n, t in enumerate(t for t in new_vocab if t in pieces)):
            raise RecipeError("prune_vocab: this Unigram tokenizer has added tokens between its pieces; "
                              "it cannot be renumbered in order")
        unk = model.get("unk_id")
        model["vocab"] = [pieces[t] for t in new_vocab if t in pieces]
        model["unk_id"] = None if unk is None else new_id[unk]
    else:
        model["vocab"] = {t: new_vocab[t] for t in model["vocab"] if t in new_vocab}
        if model["type"] == "BPE":
            model["merges"] = [[a, b] for a, b in bpe_merges(model)
                               if a in new_vocab and b in new_vocab and bpe_result(model, a, b) in new_vocab]
        if model.get("unk_token") is None and tokenizer.unk_token in new_vocab and model["type"] == "BPE":
            model["unk_token"] = tokenizer.unk_token  # a symbol no longer in the vocabulary becomes unk, not nothing
    spec["added_tokens"] = [{**t, "id": new_id[t["id"]]} for t in spec["added_tokens"]]
    if spec.get("post_processor"):
        spec["post_processor"] = renumber_processor(spec["post_processor"], new_vocab)
    if spec.get("padding") and spec["padding"].get("pad_token") in new_vocab:
        spec["padding"]["pad_id"] = new_vocab[spec["padding"]["pad_token"]]
    backend = Tokenizer.from_str(json.dumps(spec))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, model_max_length=tokenizer.model_max_length, padding_side=tokenizer.padding_side,
        truncation_side=tokenizer.truncation_side, model_input_names=list(tokenizer.model_input_names),
        **tokenizer.special_tokens_map,
    )


def prune_vocab_(model: nn.Module, keep: list[int]) -> nn.Module:
    """Keep embedding rows `keep` (old ids, ascending) in place, renumbered 0..len(keep)-1; updates vocab_size and
    pad_token_id. Any model whose `get_input_embeddings()` is its token table: slimformer, BoE/GRU/LSTM students."""
    table = model.get_input_embeddings()
    if not keep or keep != sorted(set(keep)) or keep[0] < 0 or keep[-1] >= table.num_embeddings:
        raise ValueError(f"keep must be distinct ascending ids below vocab_size {table.num_embeddings}")
    pad = model.config.pad_token_id
    new_pad = keep.index(pad) if pad in keep else None
    rows = torch.tensor(keep, device=table.weight.device)
    # (len(keep), width)
    table.weight = nn.Parameter(table.weight.detach()[rows].clone(), requires_grad=table.weight.requires_grad)
    table.num_embeddings, table.padding_idx = len(keep), new_pad
    model.config.vocab_size = len(keep)
    model.config.pad_token_id = new_pad
    sep = getattr(model.config, "sep_token_id", None)
    if sep is not None:  # a pair model finds segment B after the separator: its new id (every special token is kept)
        model.config.sep_token_id = model.embeddings.sep_token_id = keep.index(sep)
    return model


# --------------------------------------------------------------------------- the step


def check_same_tokens(encoded: dict, pruned: dict, keep: list[int], texts: dict[str, list[str]],
                      capped: bool = False) -> dict[str, torch.Tensor]:
    """Every split's new ids are its old ids renumbered, with the same masks; else raise, naming the first text that differs.
    `capped` (max_size dropped tokens the texts use): texts may be tokenized anew; returns each split's (N,) bool mask of
    the texts that were."""
    changed = {}
    for split, old in encoded.items():
        top = int(old["input_ids"].max()) if old["input_ids"].numel() else 0
        renumber = torch.full((max(keep[-1], top) + 1,), -1, dtype=torch.long)  # old id -> new id (-1: dropped)
        renumber[torch.tensor(keep)] = torch.arange(len(keep))
        new = pruned[split]
        differs = ((renumber[old["input_ids"]] != new["input_ids"]).any(dim=1)
                   | (old["attention_mask"] != new["attention_mask"]).any(dim=1))
        changed[split] = differs
        if differs.any() and not capped:
            bad = int(differs.nonzero()[0, 0])
            raise RecipeError(f"prune_vocab: the pruned tokenizer splits {split} text {bad} ({texts[split][bad][:80]!r}) "
                              "differently; this is a bug: please report it with the tokenizer's tokenizer.json")
    return changed


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def extra_inputs(cfg: PruneVocabConfig, ctx) -> dict:
    """The extra text files' digests: editing one re-runs the step."""
    from compress.data.unlabeled import unlabeled_path

    return {name: file_digest(unlabeled_path(name, ctx.base_dir)) for name in cfg.extra_texts}


@register_step("prune_vocab", PruneVocabConfig, makes_stage=True, sets_tokenizer=True, inputs=extra_inputs)
def prune_vocab(model, cfg: PruneVocabConfig, ctx):
    """Keep the embedding rows of the tokens the task uses; the stage gets its own smaller tokenizer."""
    from compress.data import encode_task

    tokenizer, encoded = ctx.tokenizer, ctx.encoded
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        raise RecipeError(f"prune_vocab {cfg.name!r}: the tokenizer has {len(tokenizer)} tokens, more than the model's "
                          f"{model.get_input_embeddings().num_embeddings} embedding rows")
    own = {split: ctx.data.texts[split] for split in cfg.splits}
    extra = read_texts(cfg.extra_texts, cfg.extra_texts_column, ctx.base_dir, max_text_chars(ctx.recipe.task.seq_len))
    texts = [t for split in own.values() for t in split] + extra
    pad = model.config.pad_token_id
    also = (pad,) if pad is not None else ()
    keep = kept_ids(tokenizer, texts, also=also)
    used = len(keep)
    capped = cfg.max_size is not None and len(keep) > cfg.max_size
    if capped:
        keep = frequent_ids(tokenizer, texts, keep, cfg.max_size, also=also)
    before = {"vocab_size": model.config.vocab_size, "tokenizer": len(tokenizer), "params": n_params(model)}
    original = model.cpu().eval()
    val = encoded["validation"]
    expected = predict(original, val)
    model = prune_vocab_(copy.deepcopy(original), keep)
    pruned_tokenizer = rebuild_tokenizer(tokenizer, keep)
    pruned = encode_task(ctx.data, pruned_tokenizer, ctx.recipe.task.seq_len)
    changed = check_same_tokens({split: encoded[split] for split in cfg.splits}, pruned, keep, ctx.data.texts, capped)
    same = ~changed["validation"]  # (N,) the texts tokenized as before: their logits must not move
    diff = float((predict(model, pruned["validation"]) - expected)[same].abs().max()) if same.any() else 0.0
    if not diff <= cfg.atol:
        raise RecipeError(f"prune_vocab {cfg.name!r}: validation logits changed by {diff:.3g} > atol {cfg.atol:g}"
                          + (" on texts tokenized as before" if capped else "") + "; nothing was saved")
    ctx.set_tokenizer(pruned_tokenizer, pruned)
    ctx.record("vocab", {
        "vocab_size_before": before["vocab_size"], "vocab_size_after": len(keep), "tokenizer_before": before["tokenizer"],
        "tokenizer_after": len(pruned_tokenizer), "params_before": before["params"], "params_after": n_params(model),
        "n_texts": len(texts), "n_extra_texts": len(texts) - sum(map(len, own.values())), "splits": cfg.splits,
        "max_abs_logit_diff": diff, "tokens_used": used, "max_size": cfg.max_size,
        # texts of each kept split whose tokens changed (a dropped token's word split anew); 0 without a cap
        "retokenized": {split: int(mask.sum()) for split, mask in changed.items()},
    })
    ctx.log(event="prune_vocab", vocab_size=len(keep), tokens_used=used, max_abs_logit_diff=diff,
            retokenized=sum(int(mask.sum()) for mask in changed.values()))
    return model.eval()
