"""The package's layering (docs/design.md, section 6), checked on every import statement of its modules."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fastwnll"
# The parts of the package by layer (docs/design.md, section 6): the numerical pipeline from the bottom
# (compiled-op plumbing -> kNN search / TV / datasets -> WNLL weights, solve, interpolation, bank ->
# layers) up to the command line. A module belongs to the longest part its name starts with; the root
# package (lazy re-exports) and the compiled ``_C`` are in layer 0.
LAYERS = {
    "fastwnll": 0,
    "fastwnll.extension": 0,
    "fastwnll.knn": 1,
    "fastwnll.tv": 1,
    "fastwnll.data": 1,
    "fastwnll.wnll": 2,
    "fastwnll.nn": 3,
    "fastwnll.models": 4,
    "fastwnll.attacks": 4,
    "fastwnll.runtime": 5,
    "fastwnll.evaluation": 6,
    "fastwnll.train": 7,
    "fastwnll.geometry": 8,
    "fastwnll.bench": 8,
    "fastwnll.cli": 8,
    "fastwnll.__main__": 9,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part_of(module: str) -> str:
    """The part of LAYERS a module belongs to (the longest matching name)."""
    matches = [name for name in LAYERS if module == name or module.startswith(name + ".")]
    assert matches, f"{module} is in no layer: add it to LAYERS and to docs/design.md, section 6"
    return max(matches, key=len)


def layer(module: str) -> int:
    return LAYERS[part_of(module)]


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
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            found.append((node.lineno, source))
            if source == "fastwnll":  # ``from fastwnll import _C``: a module of the root package
                found += [(node.lineno, f"fastwnll.{alias.name}") for alias in node.names if alias.name == "_C"]
    return [(line, name) for line, name in found if name == "fastwnll" or name.startswith("fastwnll.")]


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_the_scan_sees_the_package():
    names = {module_name(p) for p in MODULES}
    assert {"fastwnll.runtime.config", "fastwnll.train.trainer", "fastwnll.evaluation.grid"} <= names
    trainer = {name for _, name in imports(PACKAGE / "train" / "trainer.py")}
    assert {"fastwnll.runtime", "fastwnll.train.steps", "fastwnll.nn.network"} <= trainer  # relative ones resolved
    assert layer("fastwnll.knn.search") == 1 and layer("fastwnll.nn.head") == 3 and layer("fastwnll.train.steps") == 7
    assert part_of("fastwnll.extension.loader") == "fastwnll.extension" and layer("fastwnll") == 0


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
def test_parts_of_one_layer_are_siblings(path):
    """Parts of the same layer (kNN, TV and datasets; models and attacks; ...) never import each other."""
    here = part_of(module_name(path))
    crossing = [
        f"line {line}: {name}"
        for line, name in imports(path)
        if part_of(name) not in (here, "fastwnll") and layer(name) == layer(here)
    ]
    assert not crossing, f"{module_name(path)} imports a sibling part of layer {layer(here)}: {crossing}"


def test_the_pipeline_is_visible_at_the_top_of_the_package():
    """The root of the package holds only the entry points; the numerics live in one subpackage per stage."""
    root = {p.name for p in PACKAGE.glob("*.py")} - {"_build_config.py"}  # written by setup.py
    assert root == {"__init__.py", "__main__.py", "cli.py"}
    for stage in ("extension", "knn", "tv", "wnll", "nn"):
        assert (PACKAGE / stage / "__init__.py").is_file()


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


# The compiled extension is private by name (``fastwnll._C``, loaded by ``fastwnll.extension``) and is the
# one private thing the package's modules share.
EXTENSION = "fastwnll._C"


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_no_module_imports_a_private_name_of_another(path):
    own = module_name(path)
    bad = [
        f"line {line}: {name}"
        for line, name in private_imports(path)
        if name.rpartition(".")[0] != own and name != EXTENSION
    ]
    assert not bad, f"{own} imports private names of other modules: {bad}"


def test_the_private_import_scan_finds_one():
    code = "from fastwnll.wnll.weights import _helper\nfrom .head import WNLLHead, __all__\nfrom ..knn import _tiles\n"
    assert private_imports_in(code, "fastwnll.nn") == [
        (1, "fastwnll.wnll.weights._helper"),
        (3, "fastwnll.knn._tiles"),
    ]
