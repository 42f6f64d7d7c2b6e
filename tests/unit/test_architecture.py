"""The architecture holds: layers import one way, no package has an import cycle, and the checker
would notice if either broke (a planted upward import and a planted cycle, including ones written
inside a function, where v1's cycle hid)."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

SRC = REPO / "src" / "mltagger"
LAYERS = "layers: cli > reporting | benchmarks | monitoring | cycle | discover > serving"
ACYCLIC = "no import cycle between the modules of any package"
# Packages whose import may stay inside a function (heavy or optional), as the docs say.
HEAVY = {
    "torch", "transformers", "accelerate", "datasets", "wandb", "wandb_workspaces", "optuna",
    "matplotlib", "onnx", "onnxruntime", "sklearn", "scipy", "cleanlab", "faiss", "IPython",
    "pandas", "huggingface_hub", "tokenizers", "uvicorn", "psycopg",
}  # fmt: skip


def lint_imports(src_parent: Path) -> subprocess.CompletedProcess:
    """import-linter with the contracts of pyproject.toml over the package found in src_parent."""
    env = {**os.environ, "PYTHONPATH": str(src_parent)}
    return subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"),
         "--config", str(REPO / "pyproject.toml"), "--no-cache"],
        cwd=src_parent, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def contract_lines(out: str) -> dict[str, str]:
    """Contract name (prefix) -> KEPT or BROKEN, from lint-imports' summary (names may wrap)."""
    text = " ".join(out.split())
    return {name: _status(text, name) for name in (LAYERS, ACYCLIC)}


def _status(text: str, name: str) -> str:
    after = text[text.index(name) :]
    kept, broken = after.find(" KEPT"), after.find(" BROKEN")
    if broken != -1 and (kept == -1 or broken < kept):
        return "BROKEN"
    return "KEPT"


@pytest.fixture(scope="module")
def package_copy(tmp_path_factory) -> Path:
    """A copy of src/mltagger to plant bad imports in (the real tree is never touched)."""
    root = tmp_path_factory.mktemp("arch")
    shutil.copytree(SRC, root / "mltagger", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_the_real_package_keeps_every_contract():
    proc = lint_imports(REPO / "src")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def plant(package_copy: Path, where: Path, module: str, target: str) -> Path:
    """A copy of the package where `module` imports `target` inside a function."""
    shutil.copytree(package_copy, where)
    path = where / Path(*module.split(".")).with_suffix(".py")
    parent, _, name = target.rpartition(".")
    path.write_text(
        path.read_text()
        + f"\n\ndef _planted():\n    from {parent} import {name}\n\n    return {name}\n"
    )
    return where


def test_an_upward_import_inside_a_function_breaks_the_layers(package_copy, tmp_path):
    root = plant(
        package_copy, tmp_path / "up", "mltagger.data.text", "mltagger.serving.store.Store"
    )
    proc = lint_imports(root)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert contract_lines(proc.stdout)[LAYERS] == "BROKEN"
    assert "mltagger.data.text -> mltagger.serving.store" in " ".join(proc.stdout.split())


def test_a_cycle_inside_one_package_breaks_the_acyclic_contract(package_copy, tmp_path):
    # prepare imports validation; validation importing prepare closes a cycle within `data`.
    root = plant(
        package_copy, tmp_path / "cycle", "mltagger.data.validation", "mltagger.data.prepare"
    )
    proc = lint_imports(root)
    assert proc.returncode == 1, proc.stdout[-3000:]
    statuses = contract_lines(proc.stdout)
    assert statuses[ACYCLIC] == "BROKEN" and statuses[LAYERS] == "KEPT"


def _local_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import written inside a function of one file."""
    out = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if in_function and isinstance(child, ast.Import):
                out.extend((child.lineno, a.name) for a in child.names)
            elif in_function and isinstance(child, ast.ImportFrom) and child.level == 0:
                out.append((child.lineno, child.module or ""))
            visit(child, inner)

    visit(ast.parse(path.read_text()), False)
    return out


def test_imports_inside_functions_are_only_heavy_or_optional_packages():
    """Everything else is imported at the top, where import-linter and a reader see it."""
    found = [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for path in sorted(SRC.rglob("*.py"))
        if path.name != "cli.py"  # the command imports each job lazily on purpose (by name)
        for line, module in _local_imports(path)
        if module.split(".")[0] not in HEAVY
    ]
    assert not found, "\n".join(found)


def test_no_module_is_much_over_400_lines_without_saying_why():
    long = []
    for path in sorted(SRC.rglob("*.py")):
        lines = path.read_text().splitlines()
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        if len(lines) > 420 and "400 lines" not in doc:
            long.append(f"{path.relative_to(REPO)}: {len(lines)} lines, no reason in its docstring")
    assert not long, "\n".join(long)
