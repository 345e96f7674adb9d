"""The import graph: no circles among modules, and `compress` builds on `eval`, never the reverse.

Every `import` and `from ... import` of the code (at module level or inside functions: a lazy
import is still a dependency) is read with `ast`. `eval` is the lower package (measuring,
reports, the YAML schema base, atomic files, the root error), so it never imports `compress`;
`compress` may import `eval`. The CLI sits on top of both.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("compress", "eval")


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of our packages and cli.py."""
    out = {"cli": ROOT / "cli.py"}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """The modules of ours that `name` imports (a `from pkg import sub` names the submodule when it is one)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from .a import b
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import compress.models.x` where x is a name
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {name: imports_of(name, path, set(files)) for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_is_read():
    graph = import_graph()
    assert "compress.run.registry" in graph["compress.steps.distill"]
    assert "compress.steps.distill" in graph["compress.steps"]  # from compress.steps import distill
    assert "compress.models.attention_registry" in graph["compress.models.attention_full"]  # relative import


def test_no_import_circles():
    found = cycles(import_graph())
    assert not found, "import circles: " + "; ".join(" <-> ".join(c) for c in found)


def test_a_circle_would_be_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_eval_never_imports_compress():
    graph = import_graph()
    upward = sorted(f"{m} -> {t}" for m, targets in graph.items() if m.startswith("eval")
                    for t in targets if t.startswith("compress"))
    assert not upward, "eval is the lower package; these imports point the wrong way: " + ", ".join(upward)
    assert any(t.startswith("eval") for m, targets in graph.items() if m.startswith("compress") for t in targets)


def test_steps_never_import_each_other_and_the_report_imports_no_step():
    import compress.steps  # noqa: F401
    from compress.run.registry import STEPS

    graph = import_graph()
    step_modules = {spec.fn.__module__ for spec in STEPS.values()}
    for module in step_modules:
        others = graph[module] & (step_modules - {module})
        assert not others, f"{module} imports other steps {sorted(others)}: move what they share down a layer"
    assert not graph["eval.report"] & step_modules
    # only the registry's package (compress/steps/__init__.py, which registers them) imports a step module: the runner,
    # the search and the CLI reach a step through STEPS by its kind, never by importing it
    importers = sorted(m for m, targets in graph.items() if targets & step_modules and m not in step_modules | {"compress.steps"})
    assert not importers, f"{importers} import a step module: reach steps through compress.run.registry.STEPS"
