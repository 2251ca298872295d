"""Imports flow one way: the inference API needs neither training code nor `datasets`/`peft`/tensorboard.

diffusers itself imports peft when it is installed, so the test hides the training-only packages (as if
they were not installed, the state of an inference-only install) and checks the imports still work and
pull in no training or evaluation code.
"""

import subprocess
import sys

import pytest

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


def test_the_check_catches_a_forbidden_import():
    code = f"import sys\nfor name in {HIDDEN!r}: sys.modules[name] = None\nimport datasets"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode != 0


def test_cli_help_works():
    result = subprocess.run(
        [sys.executable, "-m", "latentforge", "--help"], capture_output=True, text=True, check=True
    )
    assert "export" in result.stdout
