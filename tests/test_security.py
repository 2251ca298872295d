"""Security (issue 21 item 5): no pickle is read unless the user asked for it, YAML only through safe_load,
trust_remote_code never set (a scan of latentforge/ and benchmarks/ that can fail, shown on a synthetic
snippet), accelerate's state files read weights-only, and names that come from files or prompts (LoRA names,
embedding and model names in PNG records, dataset paths) cannot reach outside the folder they are meant for."""

from __future__ import annotations

import ast
import json
import pickle
from pathlib import Path

import PIL.Image
import pytest
import torch
from PIL.PngImagePlugin import PngInfo
from pipeline_helpers import random_image

from latentforge import cli
from latentforge.commands.generation_settings import settings_from_args
from latentforge.data.sources import image_files, load_image_text_dataset
from latentforge.pipelines.prompt_loras import find_lora_file

ROOT = Path(__file__).resolve().parents[1]
# The one opt-in pickle path: weight files (--allow-pickle / allow_pickle=True), read with weights_only=True.
# It imports pickle only for pickle.UnpicklingError.
PICKLE_IMPORT_ALLOWED = {"latentforge/models/weight_files.py"}
UNPICKLERS = {"pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def scan(source: str, path: str) -> list[str]:
    """The unsafe loading in one file's `source`: each finding as 'path:line: what'."""
    findings = []
    for node in ast.walk(ast.parse(source)):
        line = f"{path}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            bad = [n for n in names if n.split(".")[0] in UNPICKLERS]
            if bad and path not in PICKLE_IMPORT_ALLOWED:
                findings.append(f"{line}: imports {bad[0]} outside the opt-in pickle path")
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id in UNPICKLERS and node.attr in ("load", "loads", "Unpickler", "open"):
                findings.append(f"{line}: {node.value.id}.{node.attr} unpickles")
            if node.value.id == "yaml" and node.attr in (
                "load",
                "load_all",
                "unsafe_load",
                "full_load",
                "Loader",
            ):
                findings.append(f"{line}: yaml.{node.attr} (use yaml.safe_load)")
        if isinstance(node, ast.Call):
            findings += _scan_call(node, line)
    return findings


def _scan_call(call: ast.Call, line: str) -> list[str]:
    name = ast.unparse(call.func)
    keywords = {k.arg: k.value for k in call.keywords}
    findings = []
    if name.endswith("torch.load") or name in ("load_state_dict_from_url", "torch.hub.load"):
        weights_only = keywords.get("weights_only")
        if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
            findings.append(f"{line}: {name} without weights_only=True")
    trust = keywords.get("trust_remote_code")
    if trust is not None and not (isinstance(trust, ast.Constant) and trust.value is False):
        findings.append(f"{line}: trust_remote_code set")
    allow = keywords.get("allow_pickle")
    if name.endswith(("np.load", "numpy.load")) and allow is not None:
        findings.append(f"{line}: numpy load with allow_pickle")
    if name in ("eval", "exec"):
        findings.append(f"{line}: {name}() of text")
    return findings


def _code_files():
    for folder in ("latentforge", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield str(path.relative_to(ROOT)), path.read_text(encoding="utf-8")


def test_the_code_never_unpickles_loads_yaml_unsafely_or_trusts_remote_code():
    findings = [f for path, source in _code_files() for f in scan(source, path)]
    assert findings == []
    assert len(list(_code_files())) > 100  # the scan saw the code


def test_the_scan_finds_each_unsafe_pattern():
    snippet = """
import pickle
import dill.settings
from joblib import load
import torch, yaml, numpy as np
state = torch.load("x.ckpt")
state = torch.load("x.ckpt", weights_only=False)
fine = torch.load("x.ckpt", map_location="cpu", weights_only=True)
data = pickle.loads(b"")
config = yaml.load(text, Loader=yaml.Loader)
safe = yaml.safe_load(text)
model = AutoModel.from_pretrained("org/name", trust_remote_code=True)
other = AutoModel.from_pretrained("org/name", trust_remote_code=flag)
array = np.load("a.npy", allow_pickle=True)
value = eval(text)
"""
    found = "\n".join(scan(snippet, "synthetic.py"))
    expected = [
        ":2: imports pickle outside",
        ":3: imports dill.settings outside",
        ":4: imports joblib outside",
        ":6: torch.load without weights_only=True",
        ":7: torch.load without weights_only=True",
        ":9: pickle.loads unpickles",
        ":10: yaml.load (use yaml.safe_load)",
        ":10: yaml.Loader (use yaml.safe_load)",
        ":12: trust_remote_code set",
        ":13: trust_remote_code set",
        ":14: numpy load with allow_pickle",
        ":15: eval() of text",
    ]
    for item in expected:
        assert f"synthetic.py{item}" in found, item
    assert ":8:" not in found and ":11:" not in found  # weights_only=True and safe_load pass
    allowed = "\n".join(scan(snippet, "latentforge/models/weight_files.py"))
    assert "imports" not in allowed and "weight_files.py:6: torch.load without" in allowed  # imports only


class _Payload:
    """A pickle that, when loaded without weights_only, writes a sentinel file (the classic attack)."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (Path.write_text, (self.sentinel, "pwned"))


def test_accelerate_state_files_are_read_weights_only(tmp_path, monkeypatch):
    """accelerate's load_state reads optimizer, scheduler and RNG files through torch.load(weights_only=True):
    every call is recorded, and a booby-trapped RNG file is refused without running its code."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.save_state(str(tmp_path / "state"))
    calls = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k.get("weights_only")) or real(*a, **k))
    accelerator.load_state(str(tmp_path / "state"))
    assert calls and all(flag is True for flag in calls), calls
    sentinel = tmp_path / "sentinel"
    (rng,) = (tmp_path / "state").glob("random_states_*.pkl")
    torch.save({"payload": _Payload(sentinel)}, rng)
    # accelerate logs a failed RNG restore and goes on (the resume checks are the checkpoints' business);
    # what matters here is that the payload never ran
    accelerator.load_state(str(tmp_path / "state"))
    assert not sentinel.exists()
    with pytest.raises(pickle.UnpicklingError):
        torch.load(rng, weights_only=True)
    torch.load(rng, weights_only=False)  # the control: read unsafely, the file does run its code
    assert sentinel.read_text() == "pwned"


def test_our_checkpoints_never_register_objects_that_accelerate_would_unpickle():
    source = "\n".join(text for _, text in _code_files())
    assert "register_for_checkpointing(" not in source  # accelerate reads those with weights_only=False


# Names from prompts and files stay in their folder.
def test_lora_names_cannot_leave_the_lora_folder(tmp_path):
    loras, outside = tmp_path / "loras", tmp_path / "private"
    loras.mkdir()
    outside.mkdir()
    (outside / "secret.safetensors").write_bytes(b"x")
    (loras / "style.safetensors").write_bytes(b"x")
    (loras / "secret.safetensors").symlink_to(outside / "secret.safetensors")
    (loras / "sub").symlink_to(outside, target_is_directory=True)
    assert find_lora_file("style", loras) == loras / "style.safetensors"
    for name in ("../private/secret", str(outside / "secret"), "..", "sub/secret"):
        with pytest.raises(ValueError, match=r"a LoRA name is a file name in --lora-dir .*no folders"):
            find_lora_file(name, loras)
    with pytest.raises(FileNotFoundError, match=r"<lora:secret>: no secret.safetensors in .*it has: style\)"):
        find_lora_file("secret", loras)  # the link that leads out is not one of the folder's LoRAs


def _record_png(path: Path, record: dict) -> None:
    info = PngInfo()
    info.add_text("latentforge", json.dumps({"prompt": "a cat", **record}))
    random_image().save(path, pnginfo=info)


def _args(png: Path, **given):
    parser = cli.build_parser()
    return parser.parse_args(
        ["generate", "--from-png", str(png), *sum((list(kv) for kv in given.items()), [])]
    )


@pytest.fixture
def shared_png(tmp_path):
    """A PNG from someone else, in its own folder, beside the user's private files."""
    private, downloads = tmp_path / "private", tmp_path / "downloads"
    private.mkdir()
    downloads.mkdir()
    PIL.Image.new("RGB", (8, 8)).save(private / "photo.png")
    (private / "secret.safetensors").write_bytes(b"x")
    (private / "model.ckpt").write_bytes(b"never opened")
    return private, downloads


@pytest.mark.parametrize("how", ["relative", "absolute-pickle", "link"])
def test_files_a_png_record_names_stay_beside_the_png(shared_png, how, monkeypatch):
    private, downloads = shared_png
    monkeypatch.chdir(downloads)
    if how == "relative":
        record = {
            "task": "img2img",
            "image": "../private/photo.png",
            "embeddings": ["../private/secret.safetensors"],
        }
        message = r"--image: file ../private/photo.png does not exist \(nor beside"
    elif how == "absolute-pickle":
        record = {"loras": [{"file": str(private / "model.ckpt"), "weight": 1.0}]}
        message = (
            r"--lora: the PNG's record names the pickle .*model.ckpt; a pickle is opened only when you name"
        )
    else:
        (downloads / "photo.png").symlink_to(private / "photo.png")
        record = {"task": "img2img", "image": "photo.png"}
        message = r"--image: file photo.png does not exist \(nor beside"
    _record_png(downloads / "shared.png", record)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        settings_from_args(_args(downloads / "shared.png"))


def test_a_model_a_png_record_names_by_a_relative_path_needs_model(shared_png, monkeypatch):
    private, downloads = shared_png
    monkeypatch.chdir(downloads)
    _record_png(downloads / "shared.png", {"model": "../private"})
    with pytest.raises(FileNotFoundError, match=r"made with the model '../private' .*pass --model"):
        settings_from_args(_args(downloads / "shared.png"))
    _record_png(downloads / "shared.png", {"model": str(private / "model.ckpt")})
    with pytest.raises(ValueError, match=r"--model: the PNG's record names the pickle"):
        settings_from_args(_args(downloads / "shared.png"))


def test_the_files_a_png_record_names_are_found_beside_it(shared_png):
    """The positive case: the same names, in the PNG's own folder, are found (the confinement is not a ban)."""
    _, downloads = shared_png
    PIL.Image.new("RGB", (8, 8)).save(downloads / "photo.png")
    _record_png(downloads / "shared.png", {"task": "img2img", "image": "/elsewhere/photo.png"})
    assert settings_from_args(_args(downloads / "shared.png")).image == str(
        (downloads / "photo.png").resolve()
    )


def _imagefolder(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True)
    for i in range(3):
        PIL.Image.new("RGB", (8, 8)).save(folder / f"{i}.png")
    rows = [{"file_name": name, "text": "x"} for name in names]
    (folder / "metadata.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.mark.parametrize("name", ["../secret/s.png", "/ABS/secret/s.png", "link.png"])
def test_dataset_paths_cannot_leave_the_dataset_folder(tmp_path, capsys, name):
    (tmp_path / "secret").mkdir()
    PIL.Image.new("RGB", (8, 8)).save(tmp_path / "secret" / "s.png")
    data = tmp_path / "data"
    _imagefolder(data, ["0.png", "1.png", name.replace("/ABS", str(tmp_path))])
    (data / "link.png").symlink_to(tmp_path / "secret" / "s.png")
    with pytest.raises(ValueError, match=r"leads outside the dataset folder"):
        load_image_text_dataset(str(data))
    argv = ["train", "unet", "--config", "smoke-unet", f"data.dataset={data}", "-o", str(tmp_path / "run")]
    assert cli.main(argv) == 2  # the train command says so before any model loads
    assert "leads outside the dataset folder" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_caption_folder_with_a_link_out_is_refused(tmp_path):
    (tmp_path / "secret.png").write_bytes(b"x")
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.png").symlink_to(tmp_path / "secret.png")
    (data / "a.txt").write_text("a cat")
    with pytest.raises(ValueError, match=r"'a.png' leads outside the dataset folder"):
        image_files(data)
