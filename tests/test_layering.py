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


def private_imports(path: Path) -> list[tuple[int, str]]:
    """``(line, "module.name")`` for every private name (one leading underscore) that ``path`` imports
    from a fastwnll module, relative imports resolved."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    return private_imports_in(path.read_text(), package)


def private_imports_in(source_text: str, package: str) -> list[tuple[int, str]]:
    """:func:`private_imports` of the code ``source_text`` of a module of the package ``package``."""
    found = []
    for node in ast.walk(ast.parse(source_text)):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        if source == "fastwnll" or source.startswith("fastwnll."):
            found += [
                (node.lineno, f"{source}.{alias.name}")
                for alias in node.names
                if alias.name.startswith("_") and not alias.name.startswith("__")
            ]
    return found


# The compiled extension is private by name (``fastwnll._C``, loaded by ``fastwnll._ext``) and is the
# one private thing the package's modules share.
EXTENSION = ("fastwnll._C", "fastwnll._ext")


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_no_module_imports_a_private_name_of_another(path):
    own = module_name(path)
    bad = [
        f"line {line}: {name}"
        for line, name in private_imports(path)
        if name.rpartition(".")[0] != own and not name.startswith(EXTENSION) and not name.endswith(EXTENSION)
    ]
    assert not bad, f"{own} imports private names of other modules: {bad}"


def test_the_private_import_scan_finds_one():
    code = "from fastwnll.graph import _private_helper\nfrom .head import WNLLHead, __all__\nfrom ..knn import _tiles\n"
    assert private_imports_in(code, "fastwnll.nn") == [
        (1, "fastwnll.graph._private_helper"),
        (3, "fastwnll.knn._tiles"),
    ]
