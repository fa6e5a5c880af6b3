"""The package's layering (docs/architecture.md): every ``tl_hf`` import, lazy ones inside functions included, goes to
a module of the same or a lower layer, and no two modules import each other through any chain (no cycles).

Pure AST: no module is imported, so the test is fast and sees imports that only run on some code paths."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tl_hf"

#: module prefix -> layer; the longest matching prefix wins. Lower layers never import higher ones.
LAYERS = {
    "tl_hf._errors": 0, "tl_hf._hub_access": 0,
    "tl_hf.core": 1,                                     # architectures, layers, optim, freezing, state, feature_cache
    "tl_hf.regularizers": 2,                             # the protocol + registry and each method
    "tl_hf.core.trainer": 3, "tl_hf.core.callbacks": 3,  # TransferTrainer builds regularizers from specs
    "tl_hf.core.trainer_state": 3,                       # its checkpoint-state / finiteness mixin
    "tl_hf.core.model_card": 3,                          # its card describes the regularizers
    "tl_hf.core.feature_cache_trainer": 3,               # its feature-cache dataloader / replay mixin
    "tl_hf.continual": 4,
    "tl_hf.hub": 5,
    "tl_hf.run": 6,
    "tl_hf.cli": 7, "tl_hf": 7,
}


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def layer_of(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def _resolve(node: ast.ImportFrom, module: str, is_pkg: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str) -> set[str]:
    """The ``tl_hf`` modules ``module`` imports (``from pkg import submodule`` counts as the submodule)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "tl_hf")
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(node, module, path.name == "__init__.py")
            if target.split(".")[0] != "tl_hf":
                continue
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
            found.update(subs)
            if len(subs) < len(node.names):
                found.add(target)
    found.discard(module)
    return {m for m in found if m in MODULES}


GRAPH = {m: imports_of(m) for m in MODULES}


def test_every_module_has_a_layer():
    assert "tl_hf.core.trainer" in MODULES and "tl_hf.run.template" in MODULES
    assert {layer_of(m) for m in MODULES} == set(range(8))


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_only_its_own_or_lower_layers(module):
    bad = sorted(t for t in GRAPH[module] if layer_of(t) > layer_of(module))
    assert not bad, f"{module} (layer {layer_of(module)}) imports higher layers: " + ", ".join(
        f"{t} (layer {layer_of(t)})" for t in bad)


def test_no_import_cycles():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for m in sorted(GRAPH):
        if m not in index:
            visit(m)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_regularizers_use_only_the_protocol_arguments():
    """A regularizer never reads a trainer's private attributes (``trainer._x``): what it needs is an argument."""
    hits = []
    for name, path in MODULES.items():
        if layer_of(name) != 2:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and isinstance(node.value, ast.Name) and "trainer" in node.value.id.lower()):
                hits.append(f"{path.name}:{node.lineno} {node.value.id}.{node.attr}")
    assert not hits, hits


def test_no_module_over_600_lines():
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > 600}
    assert not long, long


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    """The AST walk counts imports inside functions, so a lazy upward import cannot hide."""
    src = "def f():\n    from tl_hf.run.template import build_trainer\n"
    tree = ast.parse(src)
    names = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert names == ["tl_hf.run.template"]
    assert layer_of("tl_hf.run.template") > layer_of("tl_hf.core.layers")
    node = ast.parse("from ..core import layers", mode="exec").body[0]
    assert _resolve(node, "tl_hf.run.template", False) == "tl_hf.core"
