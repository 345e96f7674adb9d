"""Fused kernels for ONNX Runtime: rewrite an exported graph with onnxscript's `ort_fusions`.

The dynamo exporter writes `F.scaled_dot_product_attention` as plain MatMul/Softmax nodes
(plus the mask's Where/Expand), and ONNX Runtime's session optimizer does not fuse attention on
that graph; neither does its transformers optimizer (`onnxruntime.transformers.optimizer`,
model_type bert), whose patterns are BERT's eager graph. `onnxscript.rewriter.ort_fusions`
(`optimize_for_ort`) is written for dynamo-exported graphs; on ours it fires:

- `sdpa` then `mha2`: each full-attention layer's scores/softmax/context become one
  `com.microsoft.MultiHeadAttention` (q, k, v of shape (B, T, n_heads * head_dim) in; the
  padding mask enters as an additive `attention_bias` broadcast to (B, 1, T, T)). The packed
  `Attention` op (one QKV GEMM) does not follow: `mha_bias` needs the q/k/v bias Adds used only
  by the attention, and the mask's broadcast reads the shape of q.
- `skip_layer_normalization` (residual Add + LayerNorm -> `SkipLayerNormalization`),
  `erf_gelu` + `bias_gelu` (Linear bias + exact GELU -> `BiasGelu`).

The efficient kinds get the LayerNorm/GELU fusions, and `FusedMatMul` (a transpose folded into
the product), but mostly no attention kernel, because ONNX Runtime ships none for their shapes:
  - BigBird (Zaheer et al. 2020): the band of gathered key blocks is a 5-D product over
  (B, H, n_blocks, block, K * block) that no fused CPU op takes; only the global blocks' queries,
  which attend to every key, are dense attention, and that part does become a MultiHeadAttention.
  - Linformer (Wang et al. 2020): the softmax runs over k projected keys with a boolean
  `masked_fill` per projected row and the scale applied after the product; the sdpa rule does not
  match that graph, so scores/softmax/context stay separate nodes.
  - Performer's FAVOR+ (Choromanski et al. 2021) has no softmax: phi(Q) (phi(K)^T V) is two
  MatMuls and a division, which ONNX Runtime already runs as MLAS GEMMs; there is nothing to fuse.
Which fusions fired is returned and recorded per stage (`fusions` in results.json).

The rewritten graph holds `com.microsoft` ops: it runs in ONNX Runtime (CPU and CUDA), not in
other ONNX runtimes. Node metadata (the module path in `name_scopes`) is kept, so the
`quantize` step's selectors still find the nodes.
"""

from collections import Counter
from pathlib import Path

# ops a fusion makes (com.microsoft domain); quantization's own contrib ops are not fusions
FUSED_OPS = ("Attention", "MultiHeadAttention", "QAttention", "SkipLayerNormalization", "BiasGelu", "FastGelu",
             "Gelu", "FusedMatMul", "EmbedLayerNormalization", "SkipSimplifiedLayerNormalization")


def fused_ops(proto) -> dict[str, int]:
    """`{op_type: count}` of the fused ops (FUSED_OPS, com.microsoft domain) in an ONNX ModelProto."""
    return dict(sorted(Counter(n.op_type for n in proto.graph.node if n.domain == "com.microsoft" and n.op_type in FUSED_OPS).items()))


def fuse_for_ort(src: Path, dst: Path) -> dict[str, int]:
    """Write `src` rewritten by onnxscript's `optimize_for_ort` to `dst`; returns the fused ops in it (`fused_ops`).

    The rules that fired are logged by the caller through this count; a graph no rule matches
    is written unchanged apart from onnxscript's constant folding and common-subexpression
    elimination (same values).
    """
    import onnx
    import onnx_ir as ir
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    model, _ = optimize_for_ort(ir.load(str(src)))
    ir.save(model, str(dst))
    return fused_ops(onnx.load(str(dst), load_external_data=False))
