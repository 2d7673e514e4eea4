"""The house rules of docs/architecture.md, checked on the source: import direction, torch-free
floors, one owner for run-folder names, and no pointers outside the repository."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "hnas"

#: Floors from the bottom up: a package imports only from its own floor's lower packages and below.
#: (Same-floor packages do not import each other.)
FLOORS = [
    {"errors", "priors"},
    {"data"},
    {"planning"},
    {"grammar"},
    {"sampling", "search", "testing"},
    {"cfgunet"},
    {"train"},
    {"viz"},
    {"pipeline"},
    {"cli"},
    {"demo"},
]
FLOOR_OF = {package: level for level, packages in enumerate(FLOORS) for package in packages}
TORCH_FREE = ("data", "planning", "grammar", "sampling", "search")
#: Run-folder and cv/ names: spelled only in hnas/pipeline/layout.py.
RUN_FOLDER_NAMES = {"run.json", "plan.json", "grammar.lark", "plan_2d.json", "grammar_2d.lark", "plan_resenc_m.json",
                    "preset.json", "summary.md", "model.json", "best_configuration.json", "postprocessing.json",
                    "metrics.csv", "model.lock", "train.lock"}


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "hnas" and len(parts) > 1 else None


def _top_package(path: Path) -> str:
    relative = path.relative_to(SRC)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every ``hnas.*`` module imported by ``path``, with the line (in functions too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
    return [(name, line) for name, line in found if name.startswith("hnas.") or name == "hnas"]


def _sources() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if p.name != "__main__.py")


def test_every_module_belongs_to_a_floor():
    unknown = sorted({_top_package(p) for p in _sources()} - set(FLOOR_OF) - {"__init__"})
    assert not unknown, f"add {unknown} to FLOORS here and to docs/architecture.md"


def test_no_package_imports_a_higher_floor_or_a_neighbour():
    offences = []
    for path in _sources():
        mine = _top_package(path)
        if mine == "__init__":
            continue
        for module, line in _imports(path):
            theirs = _package(module)
            if theirs is None or theirs == mine:
                continue
            if FLOOR_OF[theirs] >= FLOOR_OF[mine]:
                offences.append(f"{path.relative_to(REPO)}:{line} ({mine}) imports {module} ({theirs})")
    assert not offences, "\n".join(offences)


@pytest.mark.parametrize("package", TORCH_FREE)
def test_lower_floors_load_no_torch(package):
    modules = sorted({f"hnas.{package}." + ".".join(p.relative_to(SRC / package).with_suffix("").parts)
                      for p in (SRC / package).rglob("*.py") if p.name != "__init__.py"} | {f"hnas.{package}"})
    code = f"import sys; import {', '.join(modules)}; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0, f"hnas.{package} imported torch"


def test_the_command_line_parser_loads_no_torch():
    code = "import sys, hnas.cli; hnas.cli.build_parser(); sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def _string_constants(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value, node.lineno


def test_run_folder_names_are_spelled_only_in_the_layout_module():
    owner = SRC / "pipeline" / "layout.py"
    offences = [f"{path.relative_to(REPO)}:{line}: {value!r}" for path in _sources() if path != owner
                for value, line in _string_constants(path) if value in RUN_FOLDER_NAMES]
    assert not offences, "use hnas.pipeline.layout instead:\n" + "\n".join(offences)


def test_fold_folders_are_named_only_in_the_layout_module():
    owner = SRC / "pipeline" / "layout.py"
    pattern = re.compile(r"""f["']fold_\{""")
    offences = [str(p.relative_to(REPO)) for p in _sources() if p != owner and pattern.search(p.read_text())]
    assert not offences, offences


def test_nothing_points_outside_the_repository():
    tests = [p for p in sorted((REPO / "tests").rglob("*.py")) if p.name != Path(__file__).name]
    texts = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *_sources(), *tests]
    offences = [f"{path.relative_to(REPO)}:{number}" for path in texts
                for number, line in enumerate(path.read_text().splitlines(), 1)
                if "FACTS" in line or "../shared/DESIGN" in line or "shared/reference" in line]
    assert not offences, "cite docs/references.md instead:\n" + "\n".join(offences)


def test_status_loads_no_torch():
    """`hnas status` reads the database only: it must stay quick on a login node without CUDA."""
    code = "import sys, hnas.pipeline.status; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
