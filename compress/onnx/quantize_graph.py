"""ONNX graph bookkeeping for the `quantize` step: node names that carry module paths, selection, counts.

The dynamo exporter records each node's module path in its `name_scopes` metadata, which graph
optimisers drop; renaming nodes `<module path>/<op>` before optimising keeps the path in the
one field every tool preserves, so `compress/select.py` globs (`classifier`, `layers.0.*`) can
pick nodes after fusion. Also: the one rewrite that lets ONNX Runtime's attention fusion match
BERT's mask pattern, and which nodes a quantizer touched. Graph-level only: no ONNX Runtime here.
"""

import ast
import fnmatch

import numpy as np

from compress.select import SelectConfig, is_selected

GEMM_SUFFIX = "_MatMul"  # quantize_dynamic's name for the MatMul it makes of a Gemm


def module_of(node) -> str:
    """The module path a node came from (`layers.0.attn.q_proj`); '' if unknown.

    Read from the dynamo exporter's `name_scopes` metadata, else from a TorchScript-exporter
    name (`/model/layers.0/attn/q_proj/MatMul`). The export wraps the model as `model`
    (compress.onnx.export.LogitsOnly): that prefix is dropped.
    """
    meta = {entry.key: entry.value for entry in node.metadata_props}
    try:
        scopes = ast.literal_eval(meta.get("pkg.torch.onnx.name_scopes", "[]"))
    except (ValueError, SyntaxError):
        scopes = []
    modules = [s for s in scopes[:-1] if s]  # the last entry is the op itself
    if modules:
        return modules[-1].removeprefix("model").lstrip(".")
    if node.name.startswith("/model/"):
        return ".".join(node.name.split("/")[2:-1])
    return ""


def name_nodes_by_module_(proto) -> None:
    """Rename each node `<module path>/<op name>` in place, so names survive fusion and read like the model."""
    for node in proto.graph.node:
        module = module_of(node)
        if module and not node.name.startswith(module + "/"):
            node.name = f"{module}/{node.name.rsplit('/', 1)[-1]}"


def name_fused_nodes_(proto, before: set[str]) -> None:
    """Name a node the optimizer made (`Attention_0`, not in `before`) after the module it feeds, less its last part.

    A fused attention feeds `layers.0.attn.out_proj/...`, so it becomes `layers.0.attn/Attention_0`.
    """
    consumers: dict[str, list] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for node in proto.graph.node:
        fed = [c.name.split("/")[0] for out in node.output for c in consumers.get(out, []) if "/" in c.name]
        if "/" not in node.name and node.name not in before and fed and "." in fed[0]:
            node.name = f"{fed[0].rsplit('.', 1)[0]}/{node.name}"


def split_unsqueezes_(proto) -> int:
    """Rewrite `Unsqueeze(x, axes=[a, b])` as two one-axis Unsqueezes, in place; returns how many.

    Same values; the exporter folds `mask[:, None, None, :]` into one node, while ONNX Runtime's
    attention fusion looks for BERT's two (`Mul <- Sub <- Cast <- Unsqueeze <- Unsqueeze`).
    """
    from onnx import helper, numpy_helper

    constants = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer if t.data_type == 7}  # int64
    nodes, count = [], 0
    for node in proto.graph.node:
        axes = constants.get(node.input[1]) if node.op_type == "Unsqueeze" and len(node.input) == 2 else None
        if axes is None or axes.size != 2 or (axes < 0).any():
            nodes.append(node)
            continue
        first, second = (numpy_helper.from_array(np.array([a], np.int64), f"{node.name}_axes{i}")
                         for i, a in enumerate(sorted(axes.tolist())))
        proto.graph.initializer.extend([first, second])
        middle = f"{node.output[0]}_unsqueezed"
        nodes.append(helper.make_node("Unsqueeze", [node.input[0], first.name], [middle], name=f"{node.name}_0"))
        nodes.append(helper.make_node("Unsqueeze", [middle, second.name], list(node.output), name=f"{node.name}_1"))
        count += 1
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    used = {i for n in proto.graph.node for i in n.input}
    unused = [t for t in proto.graph.initializer if t.name not in used]
    for tensor in unused:  # the replaced two-axis constants
        proto.graph.initializer.remove(tensor)
    return count


def is_node_selected(name: str, cfg: SelectConfig) -> bool:
    """The selection rule of `compress/select.py` for the module a node came from; `exclude` may also name nodes."""
    module = name.split("/")[0] if "/" in name else ""
    by_name = any(fnmatch.fnmatchcase(name, g) for g in cfg.exclude)
    return is_selected(module, cfg.include, cfg.exclude, cfg.protect) and not by_name


def candidates(proto, op_types: list[str], activation_matmuls: bool, rewrites_gemm: bool) -> list:
    """Nodes the quantizer may touch: an op in `op_types` with a float weight, or any MatMul with `activation_matmuls`.

    `quantize_dynamic` rewrites every Gemm as MatMul + Add (`<gemm>_MatMul`), so with MatMul
    quantized by a quantizer that does (`rewrites_gemm`) Gemms are candidates too.
    """
    ops = set(op_types) | ({"Gemm"} if rewrites_gemm and "MatMul" in op_types else set())
    weights = {t.name for t in proto.graph.initializer if t.data_type == 1}  # float32
    return [n for n in proto.graph.node if n.op_type in ops
            and (any(i in weights for i in n.input) or activation_matmuls and n.op_type == "MatMul")]


def aliases(node) -> list[tuple[str, str]]:
    """(name, op) a node may have after quantization when kept fp32: itself, or a Gemm's MatMul rewrite."""
    return [(node.name, node.op_type)] + ([(f"{node.name}{GEMM_SUFFIX}", "MatMul")] if node.op_type == "Gemm" else [])


def quantized_nodes(nodes: list, after) -> dict[str, list[str]]:
    """Split `nodes` (of the graph before quantization) into those `after` quantized and those kept fp32.

    A node is fp32 in `after` when a node of the same name and op still exists there with no
    input from a DequantizeLinear and no integer initializer; quantizers rename or rewire the others.
    """
    integer = {t.name for t in after.graph.initializer if t.data_type in (2, 3)}  # uint8, int8
    dequantized = {o for n in after.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    same = {(n.name, n.op_type): n for n in after.graph.node}
    out = {"quantized": [], "fp32": []}
    for node in nodes:
        kept = next((same[alias] for alias in aliases(node) if alias in same), None)
        fp32 = kept is not None and not any(i in dequantized or i in integer for i in kept.input)
        out["fp32" if fp32 else "quantized"].append(node.name)
    return out
