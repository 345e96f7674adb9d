"""A sentence-embedding stage's folder, readable by sentence-transformers as it is.

`SentenceTransformer(folder, trust_remote_code=True)` (Reimers & Gurevych 2019) reads `modules.json`
and runs its modules in order. `write_modules` lays out the folder of a slimformer
sentence-embedding Transformer so that they compute what slimformer computes:

0. `Transformer` (path ""): the folder's model, loaded with transformers' `AutoModel`, which
   `config.json`'s `auto_map` points at `SlimformerModel` (the same weights read as a bare
   encoder, compress/models/modeling_slimformer.py; its code is copied beside the weights, hence
   `trust_remote_code=True`); it gives the final hidden states;
1. `Pooling` (`1_Pooling/config.json`): the mean over real tokens, or the first token;
2. `Dense` (`2_Dense/`, only for a student narrower than its teacher): the projection to the
   teacher's embedding width, with the identity as its activation;
3. `Normalize`, when the model L2-normalises.

`sentence_bert_config.json` sets `max_seq_length` to the model's `max_len`. Only JSON and
safetensors are written: sentence-transformers is not needed to save, only to load.
"""

import json
from pathlib import Path

from torch import nn

ST = "sentence_transformers.models"


def write_modules(model: nn.Module, folder: Path, max_seq_length: int | None = None) -> bool:
    """Write sentence-transformers' module files for a saved sentence-embedding Transformer into `folder` (which holds
    its `save_pretrained` output); False, writing nothing, for a classifier or a non-Transformer student."""
    from safetensors.torch import save_file

    config = model.config
    if getattr(config, "embedding_dim", None) is None or getattr(config, "model_type", "") != "slimformer":
        return False
    folder = Path(folder)
    modules = [{"idx": 0, "name": "0", "path": "", "type": f"{ST}.Transformer"}]
    pooling = {"word_embedding_dimension": config.dim, "pooling_mode_cls_token": config.pooling == "cls",
               "pooling_mode_mean_tokens": config.pooling == "mean", "pooling_mode_max_tokens": False,
               "pooling_mode_mean_sqrt_len_tokens": False}
    write_json(folder / "1_Pooling" / "config.json", pooling)
    modules.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": f"{ST}.Pooling"})
    if model.classifier is not None:  # the projection to the teacher's width
        dense = folder / "2_Dense"
        write_json(dense / "config.json", {"in_features": config.dim, "out_features": config.embedding_dim, "bias": True,
                                           "activation_function": "torch.nn.modules.linear.Identity"})
        save_file({"linear.weight": model.classifier.weight.detach().contiguous().cpu(),
                   "linear.bias": model.classifier.bias.detach().contiguous().cpu()}, str(dense / "model.safetensors"))
        modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": f"{ST}.Dense"})
    if config.normalize:
        write_json(folder / "3_Normalize" / "config.json", {})
        modules.append({"idx": len(modules), "name": str(len(modules)), "path": "3_Normalize", "type": f"{ST}.Normalize"})
    write_json(folder / "modules.json", modules)
    write_json(folder / "sentence_bert_config.json", {"max_seq_length": max_seq_length or config.max_len, "do_lower_case": False})
    saved = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    saved.setdefault("auto_map", {})["AutoModel"] = "modeling_slimformer.SlimformerModel"  # the encoder view of the weights
    write_json(folder / "config.json", saved)
    return True


def write_json(path: Path, content) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")


__all__ = ["write_modules"]
