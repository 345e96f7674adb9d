"""Named model sizes, so a recipe can say `size: small` instead of spelling out every width.

`base` matches BERT-base's encoder shape (Devlin et al. 2019); the others shrink it for CPUs.
"""

SIZES: dict[str, dict] = {
    "tiny": {"dim": 64, "n_layers": 2, "n_heads": 2, "ffn_dim": 256},
    "mini": {"dim": 128, "n_layers": 4, "n_heads": 4, "ffn_dim": 512},
    "small": {"dim": 256, "n_layers": 4, "n_heads": 4, "ffn_dim": 1024},
    "medium": {"dim": 512, "n_layers": 8, "n_heads": 8, "ffn_dim": 2048},
    "base": {"dim": 768, "n_layers": 12, "n_heads": 12, "ffn_dim": 3072},
}
