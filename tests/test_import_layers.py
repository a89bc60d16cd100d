"""Imports run one way (docs/architecture.md, "Layers"): import-linter keeps the contracts in
pyproject.toml, and every module of the project sits in one of the layers, since a module left
out of them would be checked by nothing."""

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]


def project_modules() -> set[str]:
    modules = set()
    for package in CONFIG["root_packages"]:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return modules


def layered_modules() -> set[str]:
    (contract,) = [c for c in CONFIG["contracts"] if c["type"] == "layers"]
    return {name.strip() for layer in contract["layers"] for name in re.split(r"[|:]", layer)}


def test_it_keeps_every_import_contract():
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-cache", "--no-logo", str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_it_puts_every_module_in_a_layer():
    layers = layered_modules()

    def layered(module: str) -> bool:
        return any(module == layer or module.startswith(layer + ".") for layer in layers)

    # A root package can't be a layer itself (it contains them all): see the next test.
    left_out = sorted(
        module
        for module in project_modules()
        if not layered(module) and module not in CONFIG["root_packages"]
    )
    assert left_out == [], f"Add these modules to a layer in pyproject.toml: {left_out}"


def test_it_keeps_the_root_packages_empty_but_for_the_celery_app():
    """The root packages' own __init__ modules are in no layer, so they may import nothing of
    the project but config's Celery app (loaded with the settings, for `celery -A config`)."""
    for package in CONFIG["root_packages"]:
        tree = ast.parse((ROOT / package / "__init__.py").read_text())
        imported = {
            node.module if isinstance(node, ast.ImportFrom) else alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        }
        expected = {"config.celery"} if package == "config" else set()
        assert imported == expected, package
