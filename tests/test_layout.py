"""The layout stays true: each stage imports only the stages before it (docs/architecture.md).

Reads every module's imports with `ast` (top level and inside functions alike, since a lazy
import is still a dependency) and checks them against the stage order below.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "generator"

# Stage order: a module may import its own stage and any stage listed before it.
STAGES = [
    ("foundation", ("errors", "versions", "facts", "fsutil", "skew")),
    ("spec", ("spec", "addons_spec")),
    ("plan", ("plan", "topology")),
    ("secrets", ("secrets",)),
    ("artifacts", ("artifacts",)),
    ("output", ("output",)),
    ("daytwo", ("daytwo",)),
    ("pipeline", ("pipeline",)),
    ("proof", ("proof",)),
    ("commands", ("commands",)),
    ("cli", ("cli", "__main__", "__init__")),
]
RANK = {top: i for i, (_, tops) in enumerate(STAGES) for top in tops}


def _top(module: str) -> str:
    """generator.secrets.bundle -> secrets; generator/cli.py -> cli."""
    return module.split(".")[1] if module.count(".") >= 1 else "__init__"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, name: str | None = None) -> list[tuple[int, str]]:
    """(line, absolute module) for every import of a generator module in path."""
    name = name or _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
                targets = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
            else:
                targets = [node.module or ""]
            found += [(node.lineno, t) for t in targets if t.startswith("generator.")]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("generator.")]
    return found


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_belongs_to_a_stage():
    unknown = sorted({_top(_module_name(p)) for p in modules()} - set(RANK))
    assert not unknown, f"modules outside every stage (add them to STAGES and docs/architecture.md): {unknown}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_one_way(path: Path):
    me = _top(_module_name(path))
    wrong = [f"line {line}: imports {target} (stage {_top(target)})" for line, target in _imports(path)
             if RANK[_top(target)] > RANK[me]]
    assert not wrong, f"{path.relative_to(PACKAGE)} (stage {me}) imports a later stage:\n" + "\n".join(wrong)


def test_proof_is_not_imported_by_the_stages():
    users = [str(p.relative_to(PACKAGE)) for p in modules()
             if RANK[_top(_module_name(p))] < RANK["proof"] and any(_top(t) == "proof" for _, t in _imports(p))]
    assert not users


def test_the_checker_sees_a_backward_import(tmp_path):
    """The check itself can fail: a plan module that imports the pipeline is caught."""
    fake = tmp_path / "plan.py"
    fake.write_text("from .pipeline import prepare\nfrom . import facts\n\ndef f():\n    from .proof.verify import verify\n")
    found = [t for _, t in _imports(fake, "generator.plan")]
    assert found == ["generator.pipeline", "generator.facts", "generator.proof.verify"]
    assert [t for t in found if RANK[_top(t)] > RANK["plan"]] == ["generator.pipeline", "generator.proof.verify"]


def test_no_import_cycles_inside_proof():
    """lab.bed, lab.checks and lab.run import in one direction (bed <- checks <- run)."""
    graph: dict[str, set[str]] = {}
    for p in modules():
        name = _module_name(p)
        graph[name] = {t for _, t in _imports(p)}
    seen: set[str] = set()
    stack: list[str] = []

    def visit(n: str) -> None:
        if n in stack:
            cycle = stack[stack.index(n):] + [n]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if n in seen:
            return
        seen.add(n)
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if m in graph:
                visit(m)
        stack.pop()

    for n in sorted(graph):
        if n.startswith("generator.proof"):
            visit(n)


def test_every_internal_import_names_a_module_that_exists():
    """A relative import that points into the wrong stage folder fails only when it runs (lazy
    imports inside commands): resolve every one here."""
    import importlib.util
    missing = []
    for p in modules():
        for line, target in _imports(p):
            spec = importlib.util.find_spec(target) if not target.endswith(".*") else None
            if spec is None:  # `from package import name`: name may be a function, not a module
                parent, _, attr = target.rpartition(".")
                module = importlib.import_module(parent) if importlib.util.find_spec(parent) else None
                if module is None or not hasattr(module, attr):
                    missing.append(f"{p.relative_to(PACKAGE)}:{line}: {target}")
    assert not missing, "imports of things that do not exist:\n" + "\n".join(missing)
