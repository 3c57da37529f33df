"""The import directions of the package (and of the tests), read from the source with ``ast``.

The package is a stack of layers. A module may import modules of its own group (a subpackage, or a
top-level module) and of groups in lower layers, never of a group in its own or a higher layer, so every
arrow between rooms runs down. Every import of ``scoresde.*`` sits at the top of its file, where a reader
sees it, except in the command-line entry point, which imports lazily so that ``scoresde --help`` answers
at once (tests/test_cli.py times it). Optional third-party packages are imported inside the functions that
need them (``import scoresde`` must work without them), never at the top.
"""

import ast
from pathlib import Path

import scoresde

SRC = Path(__file__).resolve().parents[1] / "src" / "scoresde"

#: Bottom to top. A group is a top-level module (``sde``) or a subpackage (``nn``, ``sampling``, ...).
LAYERS = (
    ("_checks", "config"),  # argument checks; the torch-free config dataclasses
    ("nn", "progress", "runtime", "seeding", "_ode", "checkpoint", "ema", "rundir"),  # leaves: nn imports only torch
    ("sde",),
    ("analytic", "score", "losses"),
    ("serialize", "sampling", "likelihood"),
    ("discrete", "controllable", "data", "interop"),
    ("metrics", "builders"),
    ("datastream", "validation", "plots"),
    ("evaluation", "images", "resume"),
    ("train", "run"),
    ("demo",),
    ("cli",),
)
LAYER = {group: i for i, groups in enumerate(LAYERS) for group in groups}
#: The entry point: imports lazily, so that ``--help`` needs neither torch nor the numerical modules.
LAZY_MODULES = {"scoresde.cli"}
#: Optional extras: imported inside functions only.
OPTIONAL = {"sklearn", "matplotlib", "diffusers", "safetensors", "torch_fidelity", "tomli"}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = SRC.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def imported(node, module: str, is_package: bool) -> list[str]:
    """The modules an import statement loads (``from scoresde import sde`` → ``scoresde.sde``; a public name
    of the package → the module that defines it, by the package's ``_LAZY`` table)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
    else:
        base = node.module
    out = []
    for alias in node.names:
        if is_module(f"{base}.{alias.name}"):
            out.append(f"{base}.{alias.name}")
        elif base == "scoresde" and alias.name in scoresde._LAZY:
            out.append(scoresde._LAZY[alias.name])
        else:
            out.append(base)
    return out


def top_level(body):
    """The statements run at import: the module body and its ``if`` / ``try`` blocks, not functions."""
    for node in body:
        yield node
        if isinstance(node, (ast.If, ast.Try)):
            blocks = [node.body, node.orelse, getattr(node, "finalbody", [])]
            blocks += [handler.body for handler in getattr(node, "handlers", [])]
            for block in blocks:
                yield from top_level(block)


def imports():
    """(module, line, imported module, at the top?) for every import statement of the package."""
    out = []
    for path in sorted(SRC.rglob("*.py")):
        module = module_name(path)
        tree = ast.parse(path.read_text())
        top = set(map(id, top_level(tree.body)))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in dict.fromkeys(imported(node, module, path.name == "__init__.py")):  # once each
                    out.append((module, node.lineno, target, id(node) in top))
    return out


def group(module: str) -> str:
    return module.split(".")[1] if "." in module else module


IMPORTS = imports()


def test_every_module_has_a_layer():
    groups = {group(m) for m, *_ in IMPORTS} | {group(module_name(p)) for p in SRC.rglob("*.py")}
    groups.discard("scoresde")  # the package itself: names only, imported on first use
    assert groups <= set(LAYER), f"add these to LAYERS: {sorted(groups - set(LAYER))}"


def test_imports_run_down_the_layers():
    upward = [f"{m}:{line} imports {target}" for m, line, target, _ in IMPORTS
              if m != "scoresde" and target.startswith("scoresde.") and group(target) != group(m)
              and LAYER[group(target)] >= LAYER[group(m)]]
    assert not upward, "imports that do not run down the layers:\n" + "\n".join(upward)


def test_nn_imports_only_nn():
    """Networks know nothing about SDEs or scores (EDM's lesson): nn/ imports torch and itself only."""
    outside = [f"{m}:{line} imports {target}" for m, line, target, _ in IMPORTS
               if group(m) == "nn" and target.startswith("scoresde") and group(target) != "nn"]
    assert not outside, "\n".join(outside)


def test_package_imports_sit_at_the_top():
    hidden = [f"{m}:{line} imports {target} inside a function" for m, line, target, top in IMPORTS
              if not top and target.split(".")[0] == "scoresde" and m not in LAZY_MODULES]
    assert not hidden, "\n".join(hidden)


def test_optional_packages_are_imported_lazily():
    eager = [f"{m}:{line} imports {target} at the top" for m, line, target, top in IMPORTS
             if top and target.split(".")[0] in OPTIONAL]
    assert not eager, "\n".join(eager)


def test_no_test_module_imports_another():
    """Shared oracles and helpers live in tests/common.py and fixtures in tests/conftest.py."""
    found = []
    for path in sorted(SRC.parents[1].joinpath("tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.name}:{node.lineno} imports {n}" for n in names if n.startswith("tests.test_")]
    assert not found, "\n".join(found)
