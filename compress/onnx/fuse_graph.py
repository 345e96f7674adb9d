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
  For long inputs (`flash`), `flash_attention_` writes full attention instead as a
  MultiHeadAttention that ONNX Runtime runs on its CPU flash kernel, the padding mask carried
  in one extra q/k coordinate (the kernel takes no mask); it pays off from about 1,024 tokens.
- `erf_gelu` + `bias_gelu` (Linear bias + exact GELU -> `BiasGelu`).
- `skip_layer_normalization` (residual Add + LayerNorm -> `SkipLayerNormalization`) fires too,
  and `unfuse_skip_layer_norm_` undoes it: ONNX Runtime 1.32's CPU kernel for it is slower than
  the two plain nodes (measured there).

The efficient kinds get the GELU fusion, and `FusedMatMul` (a transpose folded into
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

from compress.onnx.quantize_graph import module_of

# ops a fusion makes (com.microsoft domain); quantization's own contrib ops are not fusions
FUSED_OPS = ("Attention", "MultiHeadAttention", "QAttention", "SkipLayerNormalization", "BiasGelu", "FastGelu",
             "Gelu", "FusedMatMul", "EmbedLayerNormalization", "SkipSimplifiedLayerNormalization")


def fused_ops(proto) -> dict[str, int]:
    """`{op_type: count}` of the fused ops (FUSED_OPS, com.microsoft domain) in an ONNX ModelProto."""
    return dict(sorted(Counter(n.op_type for n in proto.graph.node
                               if n.domain == "com.microsoft" and n.op_type in FUSED_OPS).items()))


def fuse_for_ort(src: Path, dst: Path, flash: bool = False) -> tuple[dict[str, int], int]:
    """Write `src` rewritten by onnxscript's `optimize_for_ort` to `dst`; returns the fused ops in it (`fused_ops`)
    and how many attention layers are in the flash form (0 without `flash`, or without full attention).

    Full attention is then packed (`pack_attention_`), or with `flash` given the masked flash form
    (`flash_attention_`, for long inputs); SkipLayerNormalization is undone (`unfuse_skip_layer_norm_`).
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
    flashed = flash_attention_(proto) if flash else 0
    unfuse_skip_layer_norm_(proto)
    onnx.save(proto, str(dst))
    return fused_ops(proto), flashed


# --------------------------------------------------------------------------- residual + LayerNorm

def unfuse_skip_layer_norm_(proto) -> int:
    """Each com.microsoft.SkipLayerNormalization becomes Sum(input, skip[, bias]) -> LayerNormalization; in place.

    Why: ONNX Runtime 1.32's CPU SkipLayerNormalization is slower than the two nodes it replaces
    (2 threads, dim 128, batch 8: 155 against 67 us at length 48, 3,077 against 744 us at 1,024),
    and the quickstart teacher at batch 8 runs 3.25 -> 3.08 ms without it. `Sum`, not `Add`: the
    session's own optimizer (SkipLayerNormFusion, on at ONNX Runtime's default level) matches
    Add + LayerNormalization and would fuse it back when a user loads the artifact; Sum is the
    same elementwise addition (with the Linear's bias folded in as a third, broadcast input).
    A node whose mean or inverse-std output is read stays as it is. Returns how many were undone.
    """
    from onnx import helper

    graph = proto.graph
    read = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}

    def unfused(node) -> list | None:
        outputs = (list(node.output) + ["", "", "", ""])[:4]  # y, mean, inv_std_var, input_skip_bias_sum
        if node.domain != "com.microsoft" or node.op_type != "SkipLayerNormalization" or {outputs[1], outputs[2]} & read - {""}:
            return None
        x, skip, gamma, beta, bias = (list(node.input) + ["", "", ""])[:5]
        total = outputs[3] or f"{node.name or outputs[0]}_sum"
        epsilon = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "epsilon"), 1e-12)
        added = helper.make_node("Sum", [x, skip] + ([bias] if bias else []), [total], name=f"{node.name}_sum")
        norm = helper.make_node("LayerNormalization", [total, gamma] + ([beta] if beta else []), [outputs[0]],
                                name=f"{node.name}_norm", axis=-1, epsilon=epsilon)
        for made in (added, norm):
            made.metadata_props.extend(node.metadata_props)
        return [added, norm]

    return rewrite_each_(proto, unfused)


def rewrite_each_(proto, rewrite: Callable) -> int:
    """Replace each node for which `rewrite(node)` returns nodes (in order, in its place); a node it returns None
    for stays. Then drop what nothing reads (replace_nodes_). In place; returns how many nodes were replaced."""
    nodes, count = [], 0
    for node in proto.graph.node:
        made = rewrite(node)
        nodes += [node] if made is None else made
        count += made is not None
    if count:
        replace_nodes_(proto, nodes)
    return count


# --------------------------------------------------------------------------- packed attention

# a padding mask's broadcast
MASK_OPS = {"Unsqueeze", "Cast", "Where", "Expand", "Concat", "Shape", "Slice", "Squeeze", "Reshape"}
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
        graph.initializer.extend([numpy_helper.from_array(W, f"{prefix}_qkv_weight"),
                                  numpy_helper.from_array(b, f"{prefix}_qkv_bias")])
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if len(set(sizes)) > 1:
            attrs["qkv_hidden_sizes"] = sizes
        packed = helper.make_node("Attention",
                                  [linears[0][0], f"{prefix}_qkv_weight", f"{prefix}_qkv_bias"] + ([MASK_INT32] if bias else []),
                                  list(node.output), name=f"{prefix}_packed", domain="com.microsoft", **attrs)
        packed.metadata_props.extend(node.metadata_props)  # the module path, for quantize's selectors
        replaced[id(node)] = packed
    if not replaced:
        return 0
    nodes = [replaced.get(id(n), n) for n in graph.node]
    if any(MASK_INT32 in n.input for n in nodes):
        nodes.insert(0, helper.make_node("Cast", [MASK_INPUT], [MASK_INT32], name="attention_mask_to_int32",
                                         to=TensorProto.INT32))
    replace_nodes_(proto, nodes)
    return len(replaced)


def is_packed_attention(node, weights: dict) -> bool:
    """A com.microsoft.Attention over constant packed weights (what `pack_attention_` writes), at most the mask input."""
    return node.domain == "com.microsoft" and node.op_type == "Attention" and len(node.input) <= 4 \
        and node.input[1] in weights and node.input[2] in weights


def scoped_(node, module: str, part: str):
    """Give a node made from a packed attention the module path `<module>.<part>` that module_of reads (layers.0.attn.q_proj)."""
    node.metadata_props.add(key="pkg.torch.onnx.name_scopes", value=repr([f"{module}.{part}".lstrip("."), "linear"]))
    return node


def unpack_attention_(proto, which: Callable[[str], bool] = lambda module: True) -> int:
    """The inverse of `pack_attention_`, in place: each com.microsoft.Attention of a module `which` accepts
    becomes q/k/v MatMul + bias Add (modules `<attention module>.q_proj` ..., so selectors find them) and a
    MultiHeadAttention with the mask as key_padding_mask. Quantization needs it where the packed GEMM cannot be
    quantized whole (static: no int8 Attention; a selection that keeps some projections fp32). Returns how many."""
    from onnx import helper, numpy_helper

    graph = proto.graph
    weights = {t.name: t for t in graph.initializer}

    def unpacked(node) -> list | None:
        if not is_packed_attention(node, weights) or not which(module := module_of(node)):  # layers.0.attn
            return None
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        W, b = numpy_helper.to_array(weights[node.input[1]]), numpy_helper.to_array(weights[node.input[2]])
        sizes = list(attrs.pop("qkv_hidden_sizes", [W.shape[1] // 3] * 3))
        nodes, qkv, start = [], [], 0
        for part, size in zip(("q_proj", "k_proj", "v_proj"), sizes, strict=True):
            name = f"{node.output[0]}_{part}"
            graph.initializer.extend([numpy_helper.from_array(np.ascontiguousarray(W[:, start : start + size]), f"{name}_weight"),
                                      numpy_helper.from_array(b[start : start + size].copy(), f"{name}_bias")])
            matmul = helper.make_node("MatMul", [node.input[0], f"{name}_weight"], [f"{name}_matmul"], name=f"{name}_MatMul")
            add = helper.make_node("Add", [f"{name}_matmul", f"{name}_bias"], [name], name=f"{name}_Add")
            nodes += [scoped_(matmul, module, part), scoped_(add, module, part)]
            qkv.append(name)
            start += size
        mask = [node.input[3]] if len(node.input) == 4 and node.input[3] else []
        mha = helper.make_node("MultiHeadAttention", qkv + (["", *mask] if mask else []), list(node.output),
                               name=f"{node.name}_unpacked", domain="com.microsoft", **attrs)
        mha.metadata_props.extend(node.metadata_props)
        return nodes + [mha]

    return rewrite_each_(proto, unpacked)


# --------------------------------------------------------------------------- flash attention for long inputs

FLASH_MIN_LEN = 1024  # inputs from which `export` writes the flash form by default (measured crossover: flash_attention_)
MASK_FILTER = -10000.0  # a padded key's scaled score (ONNX Runtime's own mask_filter_value); exp underflows to exactly 0


def flash_attention_(proto) -> int:
    """Each packed com.microsoft.Attention becomes q/k/v MatMuls and a MultiHeadAttention that runs ONNX Runtime's
    CPU flash kernel (MLAS: tiles of keys with an online softmax, never the (T, T) scores); in place. Returns how many.

    ONNX Runtime takes that path only when no key padding mask or attention bias is given, and a
    padded batch needs one. So the mask rides in one extra q/k coordinate per head: q' = [q, 1],
    k' = [k, m] with m = 0 for a real key and MASK_FILTER / scale for padding, and the `scale`
    attribute kept at 1/sqrt(head_dim), so q'.k' * scale = q.k * scale + m * scale: the additive
    mask. The 1 comes from the q bias (a zero weight column), m from one (B, T, H * (d + 1)) tensor
    made from `attention_mask` per head layout and added to k; v keeps its width (MultiHeadAttention
    takes v_head_size != qk_head_size). A graph without the mask gets the same MultiHeadAttention
    without the extra coordinate.
    The price is that coordinate (q.k over 33 numbers instead of 32), three GEMMs instead of one
    packed, and an Add per layer; the kernel pays off on long inputs only. Measured on the
    long_listops teacher (dim 64, 2 heads of 32, ONNX Runtime 1.32, 2 threads, every other input
    padded to 70%, interleaved rounds), packed Attention -> flash: batch 8 at 1,024 tokens 53.9 ->
    46.4 ms, at 512 15.9 -> 15.6, at 256 5.23 -> 5.46, at 128 2.15 -> 2.63; batch 1 at 1,024 6.02 ->
    6.21, at 512 1.94 -> 2.10. Hence FLASH_MIN_LEN.
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    weights = {t.name: t for t in graph.initializer}
    key_padding: dict[tuple[int, int], str] = {}  # (heads, head_dim) -> the (B, T, H * (d + 1)) tensor added to k

    def padding_of(heads: int, d: int, scale: float) -> list:
        """The nodes that make key_padding[(heads, d)] (none when made already): MASK_FILTER / scale in each
        head's extra coordinate where attention_mask is 0, from padding = 1 - attention_mask (B, T, 1), made once."""
        made = []
        if not key_padding:
            graph.initializer.extend([numpy_helper.from_array(np.array(1.0, np.float32), "attention_one"),
                                      numpy_helper.from_array(np.array([-1], np.int64), "attention_last_axis")])
            made += [helper.make_node("Cast", [MASK_INPUT], ["attention_mask_float"], name="attention_mask_to_float",
                                      to=TensorProto.FLOAT),
                     helper.make_node("Sub", ["attention_one", "attention_mask_float"], ["attention_padding_2d"],
                                      name="attention_padding_2d"),
                     helper.make_node("Unsqueeze", ["attention_padding_2d", "attention_last_axis"], ["attention_padding"],
                                      name="attention_padding")]
        if (heads, d) not in key_padding:
            name = key_padding[heads, d] = f"attention_key_padding_{heads}x{d}"
            column = np.zeros((heads, d + 1), np.float32)
            column[:, d] = MASK_FILTER / scale
            graph.initializer.append(numpy_helper.from_array(column.reshape(-1), f"{name}_column"))
            made.append(helper.make_node("Mul", ["attention_padding", f"{name}_column"], [name], name=name))
        return made

    def flash(node) -> list | None:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        mask = node.input[3] if len(node.input) == 4 else ""
        if not is_packed_attention(node, weights) or mask not in ("", MASK_INT32) or attrs.get("unidirectional"):
            return None
        W, b = numpy_helper.to_array(weights[node.input[1]]), numpy_helper.to_array(weights[node.input[2]])
        heads = attrs["num_heads"]
        q_size, k_size, _ = attrs.get("qkv_hidden_sizes", [W.shape[1] // 3] * 3)
        d = q_size // heads
        scale = attrs.get("scale") or 1.0 / float(np.sqrt(d))
        extra = 1 if mask else 0
        module, prefix = module_of(node), node.name or node.output[0]
        wq, bq = widened(W[:, :q_size], b[:q_size], heads, extra, 1.0)
        wk, bk = widened(W[:, q_size:q_size + k_size], b[q_size:q_size + k_size], heads, extra, 0.0)
        wv, bv = np.ascontiguousarray(W[:, q_size + k_size:]), b[q_size + k_size:]
        graph.initializer.append(numpy_helper.from_array(np.concatenate([bq, bk, bv]), f"{prefix}_qkv_bias_flash"))
        nodes, qkv = [], []
        for part, w in (("q_proj", wq), ("k_proj", wk), ("v_proj", wv)):
            name = f"{node.output[0]}_{part}"
            graph.initializer.append(numpy_helper.from_array(w, f"{name}_weight"))
            matmul = helper.make_node("MatMul", [node.input[0], f"{name}_weight"], [name], name=f"{name}_MatMul")
            nodes.append(scoped_(matmul, module, part))
            qkv.append(name)
        if mask:
            nodes += padding_of(heads, d, scale)
            nodes.append(helper.make_node("Add", [qkv[1], key_padding[heads, d]], [f"{qkv[1]}_padded"], name=f"{qkv[1]}_padded"))
            qkv[1] = f"{qkv[1]}_padded"
        mha = helper.make_node("MultiHeadAttention", qkv + [f"{prefix}_qkv_bias_flash"], list(node.output),
                               name=f"{prefix}_flash", domain="com.microsoft", num_heads=heads, scale=scale)
        mha.metadata_props.extend(node.metadata_props)
        return nodes + [mha]

    return rewrite_each_(proto, flash)


def widened(w: np.ndarray, c: np.ndarray, heads: int, extra: int, last: float) -> tuple[np.ndarray, np.ndarray]:
    """A projection's weight (D, H * d) and bias (H * d,) with `extra` coordinates appended to each head:
    zero weights, and `last` in the bias. -> (D, H * (d + extra)), (H * (d + extra),)"""
    d = w.shape[1] // heads
    w2 = np.zeros((w.shape[0], heads, d + extra), np.float32)
    w2[:, :, :d] = w.reshape(w.shape[0], heads, d)
    c2 = np.full((heads, d + extra), last, np.float32)
    c2[:, :d] = c.reshape(heads, d)
    return w2.reshape(w.shape[0], -1), c2.reshape(-1)


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

