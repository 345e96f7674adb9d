"""Import a pretrained Hugging Face encoder checkpoint into slimformer's own model, exactly.

BERT (Devlin et al. 2019; also MiniLM, TinyBERT and sentence-transformers folders), RoBERTa
(Liu et al. 2019) and XLM-RoBERTa, DistilBERT (Sanh et al. 2019) and ELECTRA (Clark et al. 2020)
are all post-LN BERT encoders; `SlimformerForSequenceClassification` with `norm: post` computes
the same function once every weight is moved to its slimformer name. Each family has an explicit
table of those names; a checkpoint weight with no place, or a slimformer weight the checkpoint
lacks, is an error that names it. Two tables are folded so the model needs no extra parts:
row 0 of the token-type table is added to the position table (single-text input), and RoBERTa's
positions, which start at padding_idx + 1, are sliced from there. With `pairs=True` (a task of
text pairs) the token-type table is imported whole instead (`embeddings.typ`, the model deriving
each token's type from the tokenizer's separator: compress/models/modeling_slimformer.py), so
both segments compute what the checkpoint computes with BERT's token_type_ids.

Weights are read with `safetensors` only (never pickle); the tokenizer is the folder's own,
loaded offline with `AutoTokenizer`. The classification head is the checkpoint's when it has a
sequence-classification head with the asked number of labels; otherwise a fresh Linear (on BERT's
pretrained pooler when the pooling is [CLS], as `BertForSequenceClassification` does), pooling
as asked, or as the sentence-transformers `1_Pooling` config says, or [CLS].

`embedding=True` imports a sentence-embedding model as sentence-transformers runs it (Reimers &
Gurevych 2019): no classifier, the output is the pooled hidden state (the `Pooling` module's mean or
[CLS]), L2-normalised when `modules.json` lists a `Normalize` module; a module slimformer does not
compute (a `Dense` projection, max pooling) is an error naming it. `sentence_bert_config.json`'s
`max_seq_length` is recorded: the length the model is used at.

Every check runs before a tensor is read (`check_pretrained`, which `slimformer validate` calls
too): the config, the architecture, the tokenizer, and each safetensors file's header, which
gives every weight's name, shape and byte range, so a file cut short is found by its size
(8 bytes + the header's length + the largest end offset) and every weight is checked against
the config without loading it.

This file imports torch, transformers, safetensors and `compress.errors` (a leaf) only.
"""

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from compress.errors import CheckpointError

from . import register_auto_classes
from .modeling_slimformer import ACTIVATIONS, SlimformerConfig, SlimformerForSequenceClassification

ACTIVATION_ATOL = 1e-4  # a checkpoint's hidden_act maps to ours only if they agree this closely on [-12, 12]
CONVERT = ("python -c \"from transformers import AutoModel; "
           "AutoModel.from_pretrained('{dir}').save_pretrained('{dir}', safe_serialization=True)\"")


@dataclass(frozen=True)
class Family:
    """How one family's checkpoint maps onto slimformer: module names (weight and bias follow)."""

    prefix: str  # the base model's prefix in task checkpoints ("bert." in BertForSequenceClassification)
    architectures: tuple[str, ...]  # accepted `architectures[0]`; the first is the bare encoder
    classifier_architecture: str  # the one whose head is imported
    layer: str  # a layer's prefix, with {i}
    layer_map: dict[str, str]  # slimformer module in a layer -> the checkpoint's
    embeddings: dict[str, str]  # slimformer module -> the checkpoint's (positions are handled apart)
    positions: str
    token_types: str | None
    head: dict[str, str]  # classifier_dense / classifier -> the checkpoint's head modules
    head_activation: str
    ignore: tuple[str, ...]  # prefixes of weights that are not the encoder (LM heads, unused pooler, buffers)
    pooler: str | None = None  # a pretrained pooler (dense + tanh on [CLS]) a fresh classifier may sit on
    position_offset: bool = False  # RoBERTa: real tokens' positions start at padding_idx + 1
    # the masked-LM head (dense, LayerNorm, output bias; the decoder is the tied word embeddings) as
    # compress.steps.pretrain.MaskedLM's modules -> the checkpoint's names; None: the family ships none we read
    mlm_head: dict[str, str] | None = None


BERT_LAYER = {
    "attn.q_proj": "attention.self.query", "attn.k_proj": "attention.self.key", "attn.v_proj": "attention.self.value",
    "attn.out_proj": "attention.output.dense", "norm1": "attention.output.LayerNorm",
    "mlp.up_proj": "intermediate.dense", "mlp.down_proj": "output.dense", "norm2": "output.LayerNorm",
}
DISTILBERT_LAYER = {
    "attn.q_proj": "attention.q_lin", "attn.k_proj": "attention.k_lin", "attn.v_proj": "attention.v_lin",
    "attn.out_proj": "attention.out_lin", "norm1": "sa_layer_norm",
    "mlp.up_proj": "ffn.lin1", "mlp.down_proj": "ffn.lin2", "norm2": "output_layer_norm",
}
BERT_EMBEDDINGS = {"embeddings.tok": "embeddings.word_embeddings", "embeddings.norm": "embeddings.LayerNorm"}
BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")


def bert_like(arch: str, **kw) -> Family:
    return Family(
        architectures=(f"{arch}Model", f"{arch}ForSequenceClassification", f"{arch}ForMaskedLM", *kw.pop("extra", ())),
        classifier_architecture=f"{arch}ForSequenceClassification", layer="encoder.layer.{i}.", layer_map=BERT_LAYER,
        positions="embeddings.position_embeddings", token_types="embeddings.token_type_embeddings", **kw,
    )


ROBERTA = {  # RoBERTa and XLM-R share names; their task heads never use the pooler
    "prefix": "roberta.", "embeddings": BERT_EMBEDDINGS,
    "head": {"classifier_dense": "classifier.dense", "classifier": "classifier.out_proj"}, "head_activation": "tanh",
    "ignore": ("lm_head.", "pooler.", *BUFFERS), "position_offset": True,
    "mlm_head": {"dense": "lm_head.dense", "norm": "lm_head.layer_norm", "bias": "lm_head.bias"},
}
FAMILIES: dict[str, Family] = {  # model_type -> family
    "bert": bert_like(
        "Bert", extra=("BertForPreTraining",), prefix="bert.", embeddings=BERT_EMBEDDINGS,
        head={"classifier_dense": "pooler.dense", "classifier": "classifier"}, head_activation="tanh",
        ignore=("cls.", "fit_dense", *BUFFERS), pooler="pooler.dense",  # fit_dense(s): TinyBERT's distillation projections
        mlm_head={"dense": "cls.predictions.transform.dense", "norm": "cls.predictions.transform.LayerNorm",
                  "bias": "cls.predictions.bias"},
    ),
    "roberta": bert_like("Roberta", **ROBERTA),
    "xlm-roberta": bert_like("XLMRoberta", **ROBERTA),
    "electra": bert_like(
        "Electra", extra=("ElectraForPreTraining",), prefix="electra.",
        embeddings=BERT_EMBEDDINGS | {"embeddings.proj": "embeddings_project"},
        head={"classifier_dense": "classifier.dense", "classifier": "classifier.out_proj"}, head_activation="gelu",
        ignore=("discriminator_predictions.", "generator_predictions.", "generator_lm_head.", *BUFFERS),
    ),
    "distilbert": Family(
        prefix="distilbert.", architectures=("DistilBertModel", "DistilBertForSequenceClassification", "DistilBertForMaskedLM"),
        classifier_architecture="DistilBertForSequenceClassification", layer="transformer.layer.{i}.", layer_map=DISTILBERT_LAYER,
        embeddings=BERT_EMBEDDINGS, positions="embeddings.position_embeddings", token_types=None,
        head={"classifier_dense": "pre_classifier", "classifier": "classifier"}, head_activation="relu",
        ignore=("vocab_transform.", "vocab_layer_norm.", "vocab_projector.", *BUFFERS),
        mlm_head={"dense": "vocab_transform", "norm": "vocab_layer_norm", "bias": "vocab_projector.bias"},
    ),
}
SUPPORTED = ", ".join(f"{t} ({', '.join(f.architectures)})" for t, f in FAMILIES.items())


@dataclass
class ImportedModel:
    model: SlimformerForSequenceClassification  # in eval mode, fp32
    tokenizer: object  # the folder's transformers fast tokenizer
    info: dict = field(default_factory=dict)  # family, architecture, head and pooling (and why), n_params, max_len, ...


@dataclass
class CheckedCheckpoint:
    """A checkpoint folder that passed every check `import_pretrained` makes, its tensors not yet read:
    what `slimformer validate` learns from it, and what the import then loads."""

    folder: Path
    family: Family
    model_type: str
    architecture: str
    hf: object  # the transformers config
    config: SlimformerConfig  # the slimformer model the weights fill
    head: dict  # decide_head's answer
    files: list[Path]  # the safetensors files
    headers: dict[str, tuple[tuple[int, ...], str]]  # weight name (prefix removed) -> (shape, dtype), from the files' headers
    tokenizer: object
    offset: int  # RoBERTa's position offset
    set_aside: tuple[str, ...]  # prefixes of weights that lie outside what is imported


def check_pretrained(
    folder: str | Path, *, label_names: list[str] | None = None, pooling: str | None = None, embedding: bool = False,
    pairs: bool = False,
) -> CheckedCheckpoint:
    """Every check of `import_pretrained`, without reading a tensor: config, architecture, activation, the
    safetensors files (headers, sizes, shards), every weight's name and shape against the config, the tokenizer.
    Raises CheckpointError naming the file and the fix."""
    if label_names is not None and (not label_names or len(set(label_names)) != len(label_names)):
        raise ValueError(f"label_names must be distinct class names, got {label_names}")
    if pooling not in (None, "mean", "cls"):
        raise ValueError(f"pooling must be 'mean', 'cls' or None (decided from the checkpoint), got {pooling!r}")
    folder = Path(folder)
    raw = read_config(folder)  # cheap checks first: config, activation, files, tokenizer; then the weights' headers
    model_type = raw["model_type"]
    family = FAMILIES[model_type]
    architecture = (raw.get("architectures") or [family.architectures[0]])[0]
    hf = load_hf_config(folder)
    shape = read_shape(hf, model_type)
    activation = match_activation(shape.pop("hidden_act"), folder)
    if family.position_offset and not isinstance(hf.pad_token_id, int):
        raise CheckpointError(f"{folder / 'config.json'}: pad_token_id is {hf.pad_token_id!r}; {model_type} positions start "
                              "after it, so it must be the padding token's id (1 in RoBERTa and XLM-R)")
    offset = hf.pad_token_id + 1 if family.position_offset else 0
    files = weight_files(folder)
    check_tokenizer_files(folder)
    tokenizer = load_tokenizer(folder, shape["vocab_size"])

    headers = read_headers(files, family.prefix)
    if embedding:
        head = embedding_head(folder, pooling)
    else:
        head = decide_head(folder, family, architecture, hf, headers, label_names, pooling)
    # weights known to lie outside what we import: LM heads, buffers, a pooler or task head not used
    set_aside = family.ignore + ((family.pooler + ".",) if family.pooler else ())
    if architecture == family.classifier_architecture:
        set_aside += tuple(f"{m}." for m in family.head.values())
    n_positions = shape.pop("n_positions")
    if n_positions - offset < 1:
        raise CheckpointError(f"{folder / 'config.json'}: max_position_embeddings {n_positions} leaves no position after "
                              f"the {offset} reserved ones; the config is broken: download it again")
    config = SlimformerConfig(
        **shape, max_len=n_positions - offset, head_dim=shape["dim"] // shape["n_heads"], attention="full", norm="post",
        activation=activation, pooling=head["pooling"], head_activation=head["head_activation"],
        initializer_range=hf.initializer_range, pad_token_id=hf.pad_token_id,
        id2label=dict(enumerate(head["labels"])), label2id={n: i for i, n in enumerate(head["labels"])},
        embedding_dim=shape["dim"] if embedding else None, normalize=head.get("normalize", False),
        **segment_table(family, hf, tokenizer, pairs, folder),
    )
    with torch.device("meta"):  # the shapes every weight must have, without allocating them
        wanted = {k: tuple(v.shape) for k, v in SlimformerForSequenceClassification(config).state_dict().items()}
    check_weights(headers, wanted, weight_map(family, config.n_layers, head, config), family, offset, set_aside, folder)
    return CheckedCheckpoint(folder, family, model_type, architecture, hf, config, head, files, headers, tokenizer, offset,
                             set_aside)


def import_pretrained(
    folder: str | Path, *, label_names: list[str] | None = None, pooling: str | None = None, seed: int = 0,
    checked: CheckedCheckpoint | None = None, embedding: bool = False, pairs: bool = False,
) -> ImportedModel:
    """Load a BERT/RoBERTa/XLM-R/DistilBERT/ELECTRA checkpoint folder as a slimformer model + tokenizer.

    `label_names`: the task's classes; a checkpoint head with another count is replaced by a fresh
    one. `pooling` ("mean" or "cls") for a fresh head; default from sentence-transformers'
    `1_Pooling/config.json`, else "cls". `seed` initialises a fresh head. `checked`: what
    `check_pretrained` returned for the same arguments (else it is called). Raises CheckpointError.
    """
    c = checked or check_pretrained(folder, label_names=label_names, pooling=pooling, embedding=embedding, pairs=pairs)
    weights, dtypes = read_weights(c.files, c.family.prefix)
    register_auto_classes()  # save_pretrained writes the code beside the weights; Auto classes load it back
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SlimformerForSequenceClassification(c.config)
    load_weights_(model, weights, weight_map(c.family, c.config.n_layers, c.head, c.config), c.family, c.offset)
    info = {
        "family": c.model_type, "architecture": c.architecture, "folder": str(c.folder),
        "head": c.head["head"], "head_reason": c.head["reason"], "pooling": c.head["pooling"],
        "pooling_from": c.head["pooling_from"], "labels": list(c.head["labels"]), "activation": c.config.activation,
        "max_len": c.config.max_len, "n_params": sum(p.numel() for p in model.parameters()), "weights": [f.name for f in c.files],
        "source_dtype": sorted(dtypes), "tokenizer_pad_token_id": c.tokenizer.pad_token_id, "pad_token_id": c.hf.pad_token_id,
        "notes": notes(c.folder, c.family, c.model_type, c.hf),
    }
    if c.config.embedding_dim is not None:
        info["embedding"] = {"dim": c.config.embedding_dim, "pooling": c.config.pooling, "normalize": c.config.normalize,
                             "max_seq_length": c.head.get("max_seq_length")}
    return ImportedModel(model=model.eval(), tokenizer=c.tokenizer, info=info)


def notes(folder: Path, family: Family, model_type: str, hf) -> list[str]:
    """What differs from the checkpoint run by transformers, in words (none of it at real tokens of one text)."""
    out = []
    if family.token_types is not None:
        out.append("token type 0 is folded into the position table for single texts; a pair task imports the token-type "
                   "table whole, types derived from the separator (no token_type_ids input)")
    if family.position_offset:
        out.append(f"positions count from the first column: right-pad inputs (as {model_type}'s tokenizer does); pad tokens get "
                   "other positions than in transformers, which changes only their own hidden states")
    if getattr(hf, "sinusoidal_pos_embds", False):
        out.append("DistilBERT's sinusoidal positions are imported as a learned (trainable) table")
    modules = [m.get("type", "?") for m in read_json(folder / "modules.json", [])]
    extra = [m for m in modules if not m.endswith((".Transformer", ".Pooling"))]
    if extra:
        out.append(f"sentence-transformers modules {extra} are not imported: the classifier reads the pooled hidden states")
    return out


def read_json(path: Path, default=None):
    """A JSON file's content, `default` when absent; a clear error when it does not parse."""
    if not path.is_file():
        return default
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); download or write the file again") from e


# --------------------------------------------------------------------------- config


def read_config(folder: Path) -> dict:
    """config.json as written, checked for what slimformer cannot compute."""
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {folder} does not exist; give a local folder with config.json, "
                              "model.safetensors and tokenizer files (e.g. `huggingface-cli download NAME --local-dir DIR` "
                              "where the hub is reachable)")
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{folder} has no config.json; give the folder a Hugging Face `save_pretrained` wrote "
                              "(for an old sentence-transformers layout, the subfolder holding config.json)")
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} holds a JSON {type(raw).__name__}, not a model config (a mapping); download it again")
    model_type = raw.get("model_type")
    if model_type is None:
        raise CheckpointError(f"{path} has no model_type; add the family's, e.g. \"model_type\": \"bert\" for an old "
                              f"BERT/TinyBERT upload (supported: {SUPPORTED})")
    if model_type not in FAMILIES:
        raise CheckpointError(f"{path}: model_type {model_type!r} cannot be imported; supported: {SUPPORTED}")
    family = FAMILIES[model_type]
    architecture = (raw.get("architectures") or [family.architectures[0]])[0]
    if architecture not in family.architectures:
        raise CheckpointError(f"{path}: architecture {architecture!r} cannot be imported; supported: {SUPPORTED}")
    kind = raw.get("position_embedding_type", "absolute")
    if kind != "absolute":
        raise CheckpointError(f"{path}: position_embedding_type {kind!r} is not supported; slimformer has absolute "
                              "learned positions only: choose a checkpoint with position_embedding_type 'absolute'")
    for key in ("is_decoder", "add_cross_attention"):
        if raw.get(key):
            raise CheckpointError(f"{path}: {key} is true; slimformer imports bidirectional encoders without cross-attention: "
                                  "choose an encoder checkpoint (or set it to false if the model was trained as an encoder)")
    return raw


def load_hf_config(folder: Path):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    except Exception as e:  # transformers raises many kinds; the user needs the file and the cause
        cause = f"{type(e).__name__}: {str(e)[:500]}"
        raise CheckpointError(f"{folder / 'config.json'} does not load in transformers: {cause}") from e


def read_shape(hf, model_type: str) -> dict:
    """The SlimformerConfig fields the checkpoint's config fixes (hidden_act and n_positions still raw)."""
    if model_type == "distilbert":
        shape = {
            "dim": hf.dim, "n_layers": hf.n_layers, "n_heads": hf.n_heads, "ffn_dim": hf.hidden_dim, "hidden_act": hf.activation,
            "layer_norm_eps": 1e-12,  # fixed in DistilBERT's code, not in its config
            "dropout": hf.dropout, "attention_dropout": hf.attention_dropout,
        }
    else:
        shape = {
            "dim": hf.hidden_size, "n_layers": hf.num_hidden_layers, "n_heads": hf.num_attention_heads,
            "ffn_dim": hf.intermediate_size, "hidden_act": hf.hidden_act, "layer_norm_eps": hf.layer_norm_eps,
            "dropout": hf.hidden_dropout_prob, "attention_dropout": hf.attention_probs_dropout_prob,
            "embed_dim": getattr(hf, "embedding_size", None),  # ELECTRA's narrower embeddings
        }
    if shape["dim"] % shape["n_heads"]:
        raise CheckpointError(f"config.json: hidden size {shape['dim']} is not divisible by {shape['n_heads']} heads")
    return shape | {"vocab_size": hf.vocab_size, "n_positions": hf.max_position_embeddings}


def match_activation(hidden_act, folder: Path) -> str:
    """Our activation that computes transformers' `hidden_act` within ACTIVATION_ATOL, else an error."""
    from transformers.activations import ACT2FN

    x = torch.linspace(-12, 12, 20001)
    if isinstance(hidden_act, str) and hidden_act in ACT2FN:
        with torch.no_grad():
            theirs = ACT2FN[hidden_act](x)
            for name, act in ACTIVATIONS.items():
                if (act()(x) - theirs).abs().max() <= ACTIVATION_ATOL:
                    return name
    raise CheckpointError(f"{folder / 'config.json'}: hidden_act {hidden_act!r} is not supported; slimformer computes "
                          f"{sorted(ACTIVATIONS)} (exact GELU, tanh GELU as in gelu_new/gelu_pytorch_tanh/gelu_fast, ReLU)")


# --------------------------------------------------------------------------- weights


def weight_files(folder: Path) -> list[Path]:
    """model.safetensors, or the shards named in model.safetensors.index.json."""
    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.is_file():
        return [single]
    if index.is_file():
        content = read_json(index)
        weight_map = content.get("weight_map") if isinstance(content, dict) else None
        if not isinstance(weight_map, dict) or not weight_map or not all(isinstance(v, str) for v in weight_map.values()):
            raise CheckpointError(f"{index} has no \"weight_map\" of weight names to shard files; download it again")
        shards = sorted(set(weight_map.values()))
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise CheckpointError(f"{index} names shards that are not in the folder: {missing}; download them too")
        return [folder / s for s in shards]
    others = [p.name for p in sorted(folder.iterdir()) if p.name.startswith(("pytorch_model", "tf_model", "flax_model"))]
    if others:
        raise CheckpointError(f"{folder} has weights only as {others}, which slimformer does not read (pickle files can "
                              "run code); convert them once to safetensors in an environment you trust: "
                              f"{CONVERT.format(dir=folder)}")
    raise CheckpointError(f"{folder} has no model.safetensors or model.safetensors.index.json; add the checkpoint's weights")


SAFETENSORS_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4,
                           "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit on the JSON header


def read_header(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """A safetensors file's tensors (name -> (shape, dtype)) from its header alone, no tensor read.

    The format: 8 bytes (little-endian length N), N bytes of JSON naming each tensor's dtype, shape and
    byte range; then the data. A file shorter than 8 + N + the largest end offset was cut short (an
    interrupted download or copy); a header that is not that JSON is corrupt. Both are CheckpointErrors."""
    fix = f"download or copy {path.name} again"
    size = path.stat().st_size
    if size < 8:
        raise CheckpointError(f"{path} is truncated: {size} bytes, fewer than the 8 that give a safetensors header's length; "
                              f"{fix}")
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if n > MAX_HEADER_BYTES:
            raise CheckpointError(f"{path} has a corrupt header: its first 8 bytes give a header of {n:,} bytes, more than "
                                  f"safetensors allows; it is not a safetensors file, or is damaged: {fix}")
        if 8 + n > size:
            raise CheckpointError(f"{path} is truncated: {size:,} bytes, but its header alone needs {8 + n:,}; {fix}")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} has a corrupt header (not the JSON a safetensors file starts with: {e}); {fix}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} has a corrupt header (a JSON {type(header).__name__}, not a mapping of tensors); {fix}")
    out, end = {}, 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, stop) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
            ok = all(isinstance(d, int) and d >= 0 for d in (*shape, begin, stop)) and begin <= stop
            nbytes = math.prod(shape) * SAFETENSORS_DTYPE_BYTES[dtype]
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok or nbytes != stop - begin:
            raise CheckpointError(f"{path} has a corrupt header: tensor {name!r} is described as {str(entry)[:200]}; {fix}")
        out[name] = (shape, dtype)
        end = max(end, stop)
    expected = 8 + n + end
    if size < expected:
        raise CheckpointError(f"{path} is truncated: {size:,} bytes where its header implies {expected:,} (8 + {n:,} bytes of "
                              f"header + {end:,} bytes of tensors); {fix}")
    if size > expected:
        raise CheckpointError(f"{path} is corrupt: {size - expected:,} bytes follow the tensors its header describes; {fix}")
    return out


def rename_weight(name: str, prefix: str) -> str:
    """A checkpoint weight's name without the base-model prefix, old LayerNorm gamma/beta renamed weight/bias."""
    name = name.removeprefix(prefix)
    if name.endswith((".gamma", ".beta")) and ("LayerNorm" in name or "layer_norm" in name):
        name = name.rsplit(".", 1)[0] + (".weight" if name.endswith(".gamma") else ".bias")
    return name


def read_headers(files: list[Path], prefix: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """Every weight's (shape, dtype) from the files' headers, named as `read_weights` names them."""
    return {rename_weight(name, prefix): entry for path in files for name, entry in read_header(path).items()}


def read_weights(files: list[Path], prefix: str) -> tuple[dict[str, torch.Tensor], set[str]]:
    """Every tensor as fp32, named without the base-model prefix, old LayerNorm gamma/beta renamed."""
    from safetensors.torch import load_file

    weights, dtypes = {}, set()
    for path in files:
        read_header(path)  # a truncated or corrupt file: a CheckpointError naming it, not safetensors' own
        for name, tensor in load_file(path, device="cpu").items():
            dtypes.add(str(tensor.dtype).removeprefix("torch."))
            weights[rename_weight(name, prefix)] = tensor.float() if tensor.is_floating_point() else tensor
    return weights, dtypes


def segment_table(family: Family, hf, tokenizer, pairs: bool, folder: Path) -> dict:
    """The config fields of the token-type table a pair task imports whole: type_vocab_size and sep_token_id ({} without)."""
    if not pairs or family.token_types is None or getattr(hf, "type_vocab_size", 0) < 2:
        return {}  # single texts, or a family without segments (RoBERTa's one row, DistilBERT): row 0 folded or nothing
    if tokenizer.sep_token_id is None:
        raise CheckpointError(f"{folder}: the tokenizer has no separator token, which ends a pair's first text; "
                              "give a checkpoint whose tokenizer has one ([SEP])")
    return {"type_vocab_size": hf.type_vocab_size, "sep_token_id": tokenizer.sep_token_id}


def weight_map(family: Family, n_layers: int, head: dict, config=None) -> dict[str, str]:
    """slimformer module -> checkpoint module, for every module with weights except the position table (and the
    token-type table, unless `config` imports it whole)."""
    mapping = dict(family.embeddings)
    if config is not None and config.type_vocab_size:
        mapping["embeddings.typ"] = family.token_types
    for i in range(n_layers):
        mapping |= {f"layers.{i}.{ours}": family.layer.format(i=i) + theirs for ours, theirs in family.layer_map.items()}
    return mapping | head["modules"]


def weight_sources(ours: Iterable[str], mapping: dict[str, str]) -> dict[str, str]:
    """slimformer weight -> the checkpoint weight it is read from, for every mapped module's weight and bias."""
    names = set(ours)
    return {f"{o}.{kind}": f"{theirs}.{kind}" for o, theirs in mapping.items() for kind in ("weight", "bias")
            if f"{o}.{kind}" in names}


def check_weights(
    shapes: dict[str, tuple], wanted: dict[str, tuple], mapping: dict[str, str], family: Family, offset: int,
    set_aside: tuple[str, ...], folder: Path,
) -> None:
    """Every slimformer weight (`wanted`: name -> shape) is in the checkpoint (`shapes`: name -> (shape, dtype))
    with that shape, and every checkpoint weight is used or known to lie outside the encoder."""
    source = weight_sources(wanted, mapping)
    tables = [f"{t}.weight" for t in (family.positions, family.token_types) if t is not None]
    missing = [theirs for theirs in [*source.values(), *tables] if theirs not in shapes]
    if missing:
        raise CheckpointError(f"{folder}: the checkpoint lacks {missing}, which its config.json implies; the files are "
                              "incomplete or belong to another architecture")
    n, width = wanted["embeddings.pos.weight"]
    rows, cols = (shapes[family.positions + ".weight"][0] + (0, 0))[:2]
    got = {name: shapes[theirs][0] for name, theirs in source.items()}
    got["embeddings.pos.weight"] = (min(max(rows - offset, 0), n), cols)  # the rows read: offset .. offset + max_len
    if family.token_types is not None and tuple(shapes[family.token_types + ".weight"][0][1:]) != (width,):
        theirs = family.token_types + ".weight"
        raise CheckpointError(f"{folder}: weight {theirs} has shape {shapes[theirs][0]} where config.json implies rows of "
                              f"{width}; config.json and the weights disagree")
    for name, shape in got.items():
        if tuple(shape) != tuple(wanted[name]):
            theirs = source.get(name, family.positions + ".weight")
            raise CheckpointError(f"{folder}: weight {theirs} has shape {tuple(shapes[theirs][0])} where config.json implies "
                                  f"{tuple(wanted[name]) if name in source else (n + offset, width)}; config.json and the "
                                  "weights disagree")
    used = set(source.values()) | set(tables)
    unmapped = sorted(k for k in shapes if k not in used and not k.startswith(set_aside))
    if unmapped:
        raise CheckpointError(f"{folder}: weights {unmapped[:8]} ({len(unmapped)} in all) have no place in slimformer's model; "
                              "the checkpoint has parts slimformer does not compute")


def load_weights_(model: nn.Module, weights: dict, mapping: dict[str, str], family: Family, offset: int) -> None:
    """Fill `model` from `weights` through `mapping` (names and shapes were checked by `check_weights`)."""
    state = model.state_dict()
    new = {ours: weights[theirs] for ours, theirs in weight_sources(state, mapping).items()}
    pos = weights[family.positions + ".weight"][offset : offset + model.config.max_len]  # (max_len, embed_dim)
    if family.token_types is not None and not model.config.type_vocab_size:
        pos = pos + weights[family.token_types + ".weight"][0]  # single-text input: token type 0 everywhere
    new["embeddings.pos.weight"] = pos
    model.load_state_dict(state | new, strict=True)


def read_mlm_head(folder: str | Path) -> tuple[dict[str, torch.Tensor] | None, str]:
    """The checkpoint's masked-LM head as MaskedLM's state (`dense.*`, `norm.*`, `bias`), or None, with
    the reason either way: continued pretraining (`pretrain` after `teacher.from`) starts from it."""
    folder = Path(folder)
    model_type = read_config(folder)["model_type"]
    family = FAMILIES[model_type]
    if family.mlm_head is None:
        return None, f"{model_type} checkpoints carry no masked-LM head slimformer reads: a fresh one"
    weights, _ = read_weights(weight_files(folder), family.prefix)
    names = {"dense.weight": family.mlm_head["dense"] + ".weight", "dense.bias": family.mlm_head["dense"] + ".bias",
             "norm.weight": family.mlm_head["norm"] + ".weight", "norm.bias": family.mlm_head["norm"] + ".bias",
             "bias": family.mlm_head["bias"]}
    missing = [theirs for theirs in names.values() if theirs not in weights]
    if missing:  # a bare encoder or a task checkpoint: the head was not saved
        return None, f"the checkpoint has no masked-LM head ({missing[0]} absent): a fresh one"
    return {ours: weights[theirs] for ours, theirs in names.items()}, "the checkpoint's masked-LM head"


# --------------------------------------------------------------------------- head and pooling


def decide_head(folder: Path, family: Family, architecture: str, hf, weights: dict, label_names, pooling) -> dict:
    """The head: the checkpoint's (when it classifies into the asked labels) or fresh, with the reason."""
    checkpoint_labels = [hf.id2label[i] for i in range(hf.num_labels)]
    if architecture == family.classifier_architecture:
        problem = getattr(hf, "problem_type", None)
        if problem not in (None, "single_label_classification"):
            reason = f"the checkpoint's head was trained for problem_type {problem!r}, not single-label classification"
        elif label_names is not None and len(label_names) != hf.num_labels:
            reason = f"the checkpoint's head has {hf.num_labels} labels {checkpoint_labels}; label_names has {len(label_names)}"
        elif pooling not in (None, "cls"):
            reason = f"pooling {pooling!r} was asked; the checkpoint's head reads the first token"
        else:
            reason = f"{architecture} head with {hf.num_labels} labels"
            if label_names is not None and list(label_names) != checkpoint_labels:  # the order cannot be checked: say it
                reason += f"; its names {checkpoint_labels} are replaced by label_names {list(label_names)}, index for index"
            return {"head": "imported", "reason": reason, "pooling": "cls",
                    "pooling_from": "checkpoint head", "head_activation": family.head_activation, "modules": family.head,
                    "labels": label_names or checkpoint_labels}
    else:
        reason = f"{architecture} has no sequence-classification head"
    if pooling is not None:
        pooling_from = "argument"
    else:
        pooling, pooling_from = sentence_transformers_pooling(folder)
        if pooling is None:
            pooling, pooling_from = "cls", "default: the first token, as the family's own classification heads"
    labels = label_names or checkpoint_labels
    modules = {}
    if pooling == "cls" and family.pooler is not None and family.pooler + ".weight" in weights:
        modules = {"classifier_dense": family.pooler}  # BertForSequenceClassification's fine-tuning start
        reason += "; fresh classifier on the checkpoint's pretrained pooler (dense + tanh on [CLS])"
    else:
        reason += "; fresh linear classifier"
    return {"head": "fresh", "reason": reason, "pooling": pooling, "pooling_from": pooling_from,
            "head_activation": "tanh" if modules else None, "modules": modules, "labels": labels}


ST_POOLING = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}
ST_MODULES = (".Transformer", ".Pooling", ".Normalize")  # the sentence-transformers modules an embedding import computes


def embedding_head(folder: Path, pooling: str | None) -> dict:
    """The sentence-embedding 'head': pooling (asked, else the folder's Pooling module, else mean, as sentence-transformers
    pools a plain checkpoint) and normalisation (a Normalize module in modules.json); no classifier."""
    modules = read_json(folder / "modules.json", [])
    kinds = [m.get("type", "?") for m in modules if isinstance(m, dict)]
    other = [k for k in kinds if not k.endswith(ST_MODULES)]
    if other:
        raise CheckpointError(f"{folder / 'modules.json'} lists sentence-transformers modules {other}, which slimformer does not "
                              f"compute (it imports {', '.join(m.lstrip('.') for m in ST_MODULES)}); choose a model without them")
    if pooling is not None:
        pooling_from = "argument"
    else:
        pooling, pooling_from = sentence_transformers_pooling(folder)
        if pooling is None:
            pooling, pooling_from = "mean", "default: the mean over real tokens, as sentence-transformers pools a checkpoint"
    normalize = any(k.endswith(".Normalize") for k in kinds)
    st_config = read_json(folder / "sentence_bert_config.json", {})
    return {"head": "embedding", "reason": f"sentence embedding: {pooling} pooling" + (", L2-normalised" if normalize else ""),
            "pooling": pooling, "pooling_from": pooling_from, "head_activation": None, "modules": {}, "labels": ["text"],
            "normalize": normalize, "max_seq_length": st_config.get("max_seq_length") if isinstance(st_config, dict) else None}


def sentence_transformers_pooling(folder: Path) -> tuple[str | None, str | None]:
    """The pooling a sentence-transformers folder's Pooling module uses, or (None, None) without one."""
    modules = read_json(folder / "modules.json", [])
    path = next((m["path"] for m in modules if m.get("type", "").endswith(".Pooling")), "1_Pooling")
    cfg_path = folder / path / "config.json"
    if not cfg_path.is_file():
        return None, None
    modes = sorted(k for k, v in read_json(cfg_path).items() if k.startswith("pooling_mode_") and v is True)
    if len(modes) != 1 or modes[0] not in ST_POOLING:
        raise CheckpointError(f"{cfg_path} pools with {modes}; slimformer pools with one of {sorted(ST_POOLING)} "
                              "(mean or cls): pass pooling='mean' or pooling='cls' to choose one "
                              "(the classifier is trained fresh either way)")
    return ST_POOLING[modes[0]], f"{path}/config.json"


# --------------------------------------------------------------------------- tokenizer

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json + merges.txt", "sentencepiece.bpe.model", "spiece.model")


def check_tokenizer_files(folder: Path) -> None:
    found = any((folder / f).is_file() for f in ("tokenizer.json", "vocab.txt", "sentencepiece.bpe.model", "spiece.model"))
    if not (found or ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file())):
        raise CheckpointError(f"{folder} has no tokenizer: add the checkpoint's tokenizer files (one of "
                              f"{', '.join(TOKENIZER_FILES)}, with tokenizer_config.json), "
                              "e.g. AutoTokenizer.from_pretrained(NAME).save_pretrained(DIR)")


def load_tokenizer(folder: Path, vocab_size: int):
    """The folder's fast tokenizer, offline; its ids must fit the embedding table."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    except Exception as e:  # transformers raises many kinds; the user needs the folder and the cause
        raise CheckpointError(f"{folder}: the tokenizer does not load: {type(e).__name__}: {str(e)[:500]}") from e
    if not getattr(tokenizer, "is_fast", False):
        raise CheckpointError(f"{folder}: the tokenizer is not a fast (tokenizers) tokenizer; add tokenizer.json, e.g. "
                              "AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR) where it converts")
    if len(tokenizer) > vocab_size:
        raise CheckpointError(f"{folder}: the tokenizer has {len(tokenizer)} tokens but the embedding table only "
                              f"{vocab_size} rows; the tokenizer belongs to another checkpoint")
    return tokenizer


__all__ = ["FAMILIES", "CheckedCheckpoint", "ImportedModel", "check_pretrained", "import_pretrained"]
