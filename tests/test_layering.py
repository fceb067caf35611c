"""The package's layering (docs/design.md, section 6), checked on every import statement of its modules."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fastwnll"
# Subpackages and modules above the core, by layer; every other part of fastwnll is core (layer 0).
LAYERS = {
    "fastwnll.nn": 1,
    "fastwnll.models": 2,
    "fastwnll.attacks": 2,
    "fastwnll.runtime": 3,
    "fastwnll.train": 4,
    "fastwnll.evaluation": 4,
    "fastwnll.geometry": 5,
    "fastwnll.bench": 5,
    "fastwnll.cli": 5,
    "fastwnll.__main__": 5,
}
SIBLINGS = ("fastwnll.train", "fastwnll.evaluation")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part_of(module: str) -> str:
    """The layered part a module belongs to: its entry in LAYERS, or "core"."""
    return next((name for name in LAYERS if module == name or module.startswith(name + ".")), "core")


def layer(module: str) -> int:
    return LAYERS.get(part_of(module), 0)


def imports(path: Path) -> list[tuple[int, str]]:
    """``(line, imported fastwnll module)`` for every import statement of ``path``, relative ones resolved."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.append((node.lineno, ".".join(base + ([node.module] if node.module else []))))
            else:
                found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name == "fastwnll" or name.startswith("fastwnll.")]


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_the_scan_sees_the_package():
    names = {module_name(p) for p in MODULES}
    assert {"fastwnll.runtime.config", "fastwnll.train.trainer", "fastwnll.evaluation.grid"} <= names
    trainer = {name for _, name in imports(PACKAGE / "train" / "trainer.py")}
    assert {"fastwnll.runtime", "fastwnll.train.evaluate", "fastwnll.nn.head"} <= trainer  # relative ones resolved
    assert layer("fastwnll.knn") == 0 and layer("fastwnll.nn.head") == 1 and layer("fastwnll.train.steps") == 4


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_no_module_imports_from_a_higher_layer(path):
    here = module_name(path)
    upward = [
        f"line {line}: {name} (layer {layer(name)})"
        for line, name in imports(path)
        if name != "fastwnll" and layer(name) > layer(here)
    ]
    assert not upward, f"{here} (layer {layer(here)}) imports from above: {upward}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_train_and_evaluation_are_siblings(path):
    here = part_of(module_name(path))
    if here not in SIBLINGS:
        return
    other = next(s for s in SIBLINGS if s != here)
    crossing = [f"line {line}: {name}" for line, name in imports(path) if part_of(name) == other]
    assert not crossing, f"{module_name(path)} imports its sibling {other}: {crossing}"


def test_every_subpackage_is_reachable_from_the_top_level():
    """``import fastwnll; fastwnll.<pkg>`` works for every subpackage (kernels is Triton-only)."""
    import fastwnll

    root = Path(fastwnll.__file__).parent
    found = {p.parent.name for p in root.glob("*/__init__.py")}
    assert set(fastwnll.SUBPACKAGES) == found
