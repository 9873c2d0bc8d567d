"""The package's shape (docs/design.md): its import graph has no cycle, counting the imports inside
functions too, so no module reaches back up to one that imports it."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).parents[1] / "jaxnas"


def modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the jaxnas modules it imports. ``from pkg import name`` points at ``pkg.name`` when that
    is a module, else at ``pkg`` (whose ``__init__`` defines the name); either way at the packages above
    it but the root, whose ``__init__`` runs first."""
    mods = modules()
    graph = {m: set() for m in mods}
    for m, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else node.module
                           for a in node.names]
            else:
                continue
            # importing a.b.c runs the __init__ of package a.b too (all but the root's, which imports everything)
            targets += [".".join(t.split(".")[:i]) for t in targets for i in range(2, t.count(".") + 1)]
            graph[m] |= {t for t in targets if t in mods and t != m and not m.startswith(t + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_hand_made_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert "jaxnas.spaces.cell_supernet" in graph and "jaxnas.relaxations.registry" in graph["jaxnas.relaxations.softmax"]
    assert cycles(graph) == []


def test_every_public_name_exists_and_is_documented():
    import jaxnas

    missing = [n for n in jaxnas.__all__ if not hasattr(jaxnas, n)]
    assert not missing
    undocumented = [n for n in jaxnas.__all__ if not (getattr(jaxnas, n).__doc__ or "").strip()]
    assert not undocumented, undocumented
