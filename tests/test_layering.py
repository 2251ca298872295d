"""Imports flow one way, floor by floor (DESIGN.md: models -> pipelines/data -> evaluation -> training ->
commands -> cli), and the inference API needs neither training code nor `datasets`/`peft`/tensorboard.

diffusers itself imports peft when it is installed, so the light-import test hides the training-only
packages (as if they were not installed, the state of an inference-only install) and checks the imports
still work and pull in no training or evaluation code.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "latentforge"
# module prefix -> floor; a module may import only from its own package or a lower floor
FLOORS = {
    "latentforge._lazy": 0,
    "latentforge.resources": 0,
    "latentforge.config_loader": 0,
    "latentforge.imaging": 0,
    "latentforge.image_metrics": 0,
    "latentforge.atomic_files": 0,
    "latentforge.models": 1,
    "latentforge.pipelines": 2,
    "latentforge.data": 2,
    "latentforge.evaluation": 3,
    "latentforge.training": 4,
    "latentforge.commands": 5,
    "latentforge.cli": 6,
    "latentforge.__main__": 7,
}

HIDDEN = ("datasets", "peft", "tensorboard")
FORBIDDEN = ("latentforge.training", "latentforge.data", "latentforge.evaluation.compositional")


@pytest.mark.parametrize(
    "statement",
    [
        "import latentforge",
        "import latentforge.models.components",
        "from latentforge import TextToImagePipeline, ImageToImagePipeline, InpaintPipeline",
        "import latentforge.cli; latentforge.cli.build_parser()",
    ],
)
def test_inference_imports_stay_light(statement):
    code = (
        "import sys\n"
        f"for name in {HIDDEN!r}: sys.modules[name] = None  # import fails, find_spec says absent\n"
        f"{statement}\n"
        f"print(','.join(sorted(m for m in sys.modules if m.startswith({FORBIDDEN!r}))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, f"{statement!r} needs a training-only package:\n{result.stderr[-2000:]}"
    assert result.stdout.strip() == "", f"{statement!r} imported {result.stdout.strip()}"


def test_cli_help_works():
    result = subprocess.run(
        [sys.executable, "-m", "latentforge", "--help"], capture_output=True, text=True, check=True
    )
    assert "export" in result.stdout


def _room(module: str) -> str:
    """The longest FLOORS prefix of `module` (its package, or the top-level module itself)."""
    matches = [p for p in FLOORS if module == p or module.startswith(p + ".")]
    assert matches, f"{module} has no floor in FLOORS: give it one"
    return max(matches, key=len)


def _project_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of a latentforge module in `path`, at any depth (functions too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            # `from latentforge.pipelines import denoising` imports the module latentforge.pipelines.denoising
            target = next(
                (n for n in reversed(names) if (PACKAGE.parent / (n.replace(".", "/") + ".py")).is_file()),
                node.module,
            )
            found.append((node.lineno, target))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
    return [(line, m) for line, m in found if m == "latentforge" or m.startswith("latentforge.")]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_imports_never_go_up_a_floor_or_across_a_floor():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = _module_name(path)
        if importer == "latentforge":  # the package's lazy public names point everywhere by design
            continue
        for line, imported in _project_imports(path):
            if imported == "latentforge":
                continue
            a, b = _room(importer), _room(imported)
            if a != b and FLOORS[b] >= FLOORS[a]:
                wrong.append(
                    f"{path.relative_to(PACKAGE.parent)}:{line} imports {imported} (floor {FLOORS[b]} >= {FLOORS[a]})"
                )
    assert not wrong, "imports against the floors:\n" + "\n".join(wrong)


def test_the_floor_check_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from latentforge.training import losses\n")
    assert _project_imports(module) == [(2, "latentforge.training.losses")]
