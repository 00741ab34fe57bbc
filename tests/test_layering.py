"""The package's import graph: no cycle, and no import that points up the layers.

Every `import` of the package counts, those inside functions included (a lazy import still ties two
modules together). Floors, lowest first; a module may import its own floor and those below it:

    0  errors, progress, hardware, profiling, _native, threads
    1  config, provenance, dist, data, ops
    2  models, runs, train, resume, tuning, preflight
    3  references, audit, cnr, baselines      (none of them imports another of the four but references)
    4  experiments
    5  cli

plus DESIGN.md's rules: ops import nothing of the stages; audit never knows cnr, baselines or the
drivers; baselines do not borrow from cnr; nothing imports bench.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "cnr_fast"

FLOORS = {
    "errors": 0, "progress": 0, "registry": 0, "hardware": 0, "profiling": 0, "_native": 0, "_C": 0, "threads": 0,
    "config": 1, "provenance": 1, "dist": 1, "data": 1, "ops": 1,
    "models": 2, "runs": 2, "train": 2, "resume": 2, "tuning": 2, "preflight": 2,
    "references": 3, "audit": 3, "cnr": 3, "baselines": 3,
    "experiments": 4,
    "cli": 5, "api": 5,
}
# on floor 3, only `references` may be imported by its neighbours
SIBLINGS_ALLOWED = {"references"}


def _modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = list(p.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = p
    return out


def _edges(mods: dict[str, Path]) -> dict[str, set[str]]:
    def known(name):
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    edges = {m: set() for m in mods}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level == 0:
                    base = node.module or ""
                else:
                    parts = mod.split(".")
                    if not is_pkg:
                        parts = parts[:-1]
                    parts = parts[: len(parts) - (node.level - 1)]
                    base = ".".join(parts + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            for t in targets:
                if t.split(".")[0] == "bench":
                    edges[mod].add("bench")
                k = known(t) if t.startswith("cnr_fast") else None
                # an ancestor package (`from .. import dist` names cnr_fast) is not an edge: Python has
                # run its __init__ before this module's first line anyway
                if k and k != mod and not mod.startswith(k + "."):
                    edges[mod].add(k)
    return edges


def _area(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_no_import_cycle():
    mods = _modules()
    edges = _edges(mods)
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in mods:
                continue
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
                cycles.append(sorted(comp))

    for v in mods:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_no_upward_import_and_design_rules():
    mods = _modules()
    bad = []
    for mod, targets in _edges(mods).items():
        a = _area(mod)
        for t in targets:
            if t == "bench":
                bad.append(f"{mod} imports bench")
                continue
            b = _area(t)
            if a == b or a == "__init__" or b == "__init__":
                continue
            fa, fb = FLOORS.get(a), FLOORS.get(b)
            assert fa is not None and fb is not None, f"floor of {a!r} or {b!r} unknown: add it to FLOORS"
            if fb > fa or (fb == fa == 3 and b not in SIBLINGS_ALLOWED):
                bad.append(f"{mod} (floor {fa}) imports {t} (floor {fb})")
    assert not bad, "imports that point up the layers:\n" + "\n".join(sorted(bad))


def test_no_module_over_500_lines_but_kernels():
    """Modules split by job: none over 500 lines except a Triton kernel file."""
    long = {str(p.relative_to(ROOT)): n for p in ROOT.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 500 and "_triton" not in p.parts}
    assert not long, f"modules over 500 lines: {long}"
