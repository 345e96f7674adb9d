"""Fused kernels for ONNX Runtime: rewrite an exported graph with onnxscript's `ort_fusions`.

The dynamo exporter writes `F.scaled_dot_product_attention` as plain MatMul/Softmax nodes
(plus the mask's Where/Expand), and ONNX Runtime's session optimizer does not fuse attention on
that graph; neither does its transformers optimizer (`onnxruntime.transformers.optimizer`,
model_type bert), whose patterns are BERT's eager graph. `onnxscript.rewriter.ort_fusions`
(`optimize_for_ort`) is written for dynamo-exported graphs; on ours it fires:

- `sdpa` then `mha2`: each full-attention layer's scores/softmax/context become one
  `com.microsoft.MultiHeadAttention` (q, k, v of shape (B, T, n_heads * head_dim) in; the
  padding mask enters as an additive `attention_bias` broadcast to (B, 1, T, T)). Its packed
  form does not follow there (`mha_bias` needs the q/k/v bias Adds used only by the attention,
  and the mask's broadcast reads the shape of q), so `pack_attention_` does it here: the three
  q/k/v Linears of one input and the MultiHeadAttention become one `com.microsoft.Attention`
  (one GEMM against the packed (D, 3D) weights, the key padding mask as int32 (B, T)). On the
  quickstart teacher (length 48, 2 threads, interleaved rounds) that is 8 nodes fewer per layer,
  0.57 -> 0.51 ms at batch 1, 13.6 -> 12.7 ms at batch 32, and 0-10% at batch 8 (rounds
  disagreed). Dynamic quantization turns it into `QAttention` (int8 QKV GEMM); static
  quantization has no int8 Attention, so `unpack_attention_` restores the unpacked form (q/k/v
  MatMuls it can quantize + MultiHeadAttention) first.
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
from collections.abc import Callable
from pathlib import Path

import numpy as np

from compress.quantize_graph import module_of

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
    proto = ir.to_proto(model)
    pack_attention_(proto)
    onnx.save(proto, str(dst))
    return fused_ops(proto)


# --------------------------------------------------------------------------- packed attention

MASK_OPS = {"Unsqueeze", "Cast", "Where", "Expand", "Concat", "Shape", "Slice", "Squeeze", "Reshape"}  # a padding mask's broadcast
MASK_INPUT, MASK_INT32 = "attention_mask", "attention_mask_int32"


def pack_attention_(proto) -> int:
    """Rewrite each MultiHeadAttention whose q, k, v are Linears (MatMul + bias Add, constant weights) of
    one input, masked by the graph's `attention_mask` only (key padding), as one com.microsoft.Attention
    over packed weights; in place. Returns how many; the nodes left unused are removed."""
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    weights = {t.name: t for t in graph.initializer}
    producer = {out: n for n in graph.node for out in n.output}
    replaced = {}
    for node in graph.node:
        if node.domain != "com.microsoft" or node.op_type != "MultiHeadAttention" or not 3 <= len(node.input) <= 6:
            continue
        qkv_bias, padding, bias = (list(node.input[3:]) + ["", "", ""])[:3]
        if qkv_bias or padding:
            continue  # not the form the sdpa rule writes (a bias input, or a key_padding_mask already)
        linears = [linear_of(producer, weights, name) for name in node.input[:3]]
        if None in linears or len({x for x, _, _ in linears}) != 1 or not (bias == "" or is_padding_mask(producer, bias)):
            continue
        W = np.concatenate([numpy_helper.to_array(weights[w]) for _, w, _ in linears], axis=1)  # (D, q + k + v)
        b = np.concatenate([numpy_helper.to_array(weights[c]) for _, _, c in linears])  # (q + k + v,)
        sizes = [weights[w].dims[1] for _, w, _ in linears]
        prefix = node.name or node.output[0]
        graph.initializer.extend([numpy_helper.from_array(W, f"{prefix}_qkv_weight"), numpy_helper.from_array(b, f"{prefix}_qkv_bias")])
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if len(set(sizes)) > 1:
            attrs["qkv_hidden_sizes"] = sizes
        packed = helper.make_node("Attention", [linears[0][0], f"{prefix}_qkv_weight", f"{prefix}_qkv_bias"] + ([MASK_INT32] if bias else []),
                                  list(node.output), name=f"{prefix}_packed", domain="com.microsoft", **attrs)
        packed.metadata_props.extend(node.metadata_props)  # the module path, for quantize's selectors
        replaced[id(node)] = packed
    if not replaced:
        return 0
    nodes = [replaced.get(id(n), n) for n in graph.node]
    if any(MASK_INT32 in n.input for n in nodes):
        nodes.insert(0, helper.make_node("Cast", [MASK_INPUT], [MASK_INT32], name="attention_mask_to_int32", to=TensorProto.INT32))
    replace_nodes_(proto, nodes)
    return len(replaced)


def unpack_attention_(proto, which: Callable[[str], bool] = lambda module: True) -> int:
    """The inverse of `pack_attention_`, in place: each com.microsoft.Attention of a module `which` accepts
    becomes q/k/v MatMul + bias Add (modules `<attention module>.q_proj` ..., so selectors find them) and a
    MultiHeadAttention with the mask as key_padding_mask. Quantization needs it where the packed GEMM cannot be
    quantized whole (static: no int8 Attention; a selection that keeps some projections fp32). Returns how many."""
    from onnx import helper, numpy_helper

    graph = proto.graph
    weights = {t.name: t for t in graph.initializer}
    nodes, count = [], 0
    for node in graph.node:
        if node.domain != "com.microsoft" or node.op_type != "Attention" or len(node.input) > 4 \
                or node.input[1] not in weights or node.input[2] not in weights:
            nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        W, b = numpy_helper.to_array(weights[node.input[1]]), numpy_helper.to_array(weights[node.input[2]])
        sizes = list(attrs.pop("qkv_hidden_sizes", [W.shape[1] // 3] * 3))
        module = module_of(node)  # layers.0.attn
        if not which(module):
            nodes.append(node)
            continue
        qkv, start = [], 0
        for part, size in zip(("q_proj", "k_proj", "v_proj"), sizes):
            name = f"{node.output[0]}_{part}"
            graph.initializer.extend([numpy_helper.from_array(np.ascontiguousarray(W[:, start : start + size]), f"{name}_weight"),
                                      numpy_helper.from_array(b[start : start + size].copy(), f"{name}_bias")])
            matmul = helper.make_node("MatMul", [node.input[0], f"{name}_weight"], [f"{name}_matmul"], name=f"{name}_MatMul")
            add = helper.make_node("Add", [f"{name}_matmul", f"{name}_bias"], [name], name=f"{name}_Add")
            for made in (matmul, add):  # what module_of reads: layers.0.attn.q_proj
                made.metadata_props.add(key="pkg.torch.onnx.name_scopes", value=repr([f"{module}.{part}".lstrip("."), "linear"]))
            nodes += [matmul, add]
            qkv.append(name)
            start += size
        mask = [node.input[3]] if len(node.input) == 4 and node.input[3] else []
        mha = helper.make_node("MultiHeadAttention", qkv + (["", *mask] if mask else []), list(node.output),
                               name=f"{node.name}_unpacked", domain="com.microsoft", **attrs)
        mha.metadata_props.extend(node.metadata_props)
        nodes.append(mha)
        count += 1
    if count:
        replace_nodes_(proto, nodes)
    return count


def linear_of(producer: dict, weights: dict, name: str) -> tuple[str, str, str] | None:
    """(input, weight, bias) when `name` is Add(MatMul(input, weight), bias) with constant weight and bias, else None."""
    add = producer.get(name)
    if add is None or add.op_type != "Add" or add.domain not in ("", "ai.onnx"):
        return None
    for product, bias in (add.input, add.input[::-1]):
        matmul = producer.get(product)
        if matmul is not None and matmul.op_type == "MatMul" and matmul.input[1] in weights and bias in weights \
                and len(weights[matmul.input[1]].dims) == 2 and len(weights[bias].dims) == 1:
            return matmul.input[0], matmul.input[1], bias
    return None


def is_padding_mask(producer: dict, name: str) -> bool:
    """Is `name` computed from the graph input `attention_mask` alone by broadcasting ops (MASK_OPS)?
    Shapes read by `Shape` are not followed: they carry no values into the mask."""
    stack, seen, reached = [name], set(), set()
    while stack:
        current = stack.pop()
        if current in seen or current == "":
            continue
        seen.add(current)
        node = producer.get(current)
        if node is None:
            reached.add(current)  # a graph input or a constant
            continue
        if node.op_type not in MASK_OPS:
            return False
        if node.op_type != "Shape":
            stack.extend(node.input)
    return MASK_INPUT in reached


def replace_nodes_(proto, nodes: list) -> None:
    """Set the graph's nodes to `nodes`, then drop the nodes and initializers nothing reads any more."""
    outputs = {o.name for o in proto.graph.output}
    while True:
        read = {i for n in nodes for i in n.input} | outputs
        kept = [n for n in nodes if any(o in read for o in n.output)]
        if len(kept) == len(nodes):
            break
        nodes = kept
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    read = {i for n in nodes for i in n.input}
    unused = [t for t in proto.graph.initializer if t.name not in read]
    for tensor in unused:
        proto.graph.initializer.remove(tensor)

