"""Bad input on the command line (issue 21 item 1): every case ends in exit code 2 and one line that names the
input and the fix, with no traceback, before the model loads where it can, and leaves the user's files
byte-for-byte as they were with no half-written output beside them. Run in-process through `cli.main`."""

from __future__ import annotations

import hashlib
import re

import PIL.Image
import pytest
from PIL.PngImagePlugin import PngInfo
from pipeline_helpers import box_mask, random_image, tiny

from latentforge import cli
from latentforge.models.components import Components


class ModelLoaded(AssertionError):
    """A case that should be refused before any model loads got that far (not caught by cli.main)."""


def _png_with(path, key: str, text: str) -> None:
    info = PngInfo()
    info.add_text(key, text)
    random_image().save(path, pnginfo=info)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The user's files: a tiny model, images, masks, configs and broken versions of them."""
    root = tmp_path_factory.mktemp("user")
    tiny().save_pretrained(root / "model")
    random_image().save(root / "image.png")
    box_mask().save(root / "mask.png")
    data = (root / "image.png").read_bytes()
    (root / "truncated.png").write_bytes(data[: len(data) // 2])
    (root / "empty.png").write_bytes(b"")
    (root / "text.png").write_text("not an image")
    PIL.Image.new("L", (40, 40)).save(root / "mask40.png")
    with PIL.Image.new("1", (1, 1)) as small:  # a header that claims 20000 x 20000 pixels, a few KB on disk
        small.resize((20000, 20000)).save(root / "bomb.png")
    _png_with(root / "record-list.png", "latentforge", "[1, 2]")
    _png_with(root / "record-types.png", "latentforge", '{"prompt": 5, "steps": 2}')
    _png_with(root / "record-width.png", "latentforge", '{"prompt": "a", "width": "big"}')
    _png_with(root / "record-task.png", "latentforge", '{"prompt": "a", "task": "upscale"}')
    _png_with(root / "record-json.png", "latentforge", '{"prompt": "a", ')
    _png_with(root / "a1111.png", "parameters", "a cat\nSteps: many, Seed: 3, CFG scale: 7")
    (root / "binary.yaml").write_bytes(b"\xff\xfe\x00\x80garbage")
    (root / "list.yaml").write_text("- a\n- b\n")
    (root / "broken.yaml").write_text("optim: {max_steps: 3\n")
    (root / "nested.yaml").write_text("optim:\n  max_step: 3\n")
    (root / "fake.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    (root / "lora.ckpt").write_bytes(b"never opened")
    (root / "notes.txt").write_text("hello")
    return root


def _hashes(root) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


G = ["--model", "MODEL", "--steps", "2", "--seed", "1", "-o", "OUT/x.png"]
I2I = ["img2img", "a cat", "--image"]
INP = ["inpaint", "a cat", "--image", "U/image.png", "--mask"]
TRAIN = ["train", "unet", "--config", "smoke-unet", "-o", "OUT/run"]
# (argv, the message, refused before the model loads)
CASES = [
    # generate: sizes, ranges, numbers
    (["generate", "a cat", *G, "--size", "33x32"], r"multiples of 2 \(the VAE's downscale factor\)", True),
    (["generate", "a cat", *G, "--size", "0"], r"positive multiples of 2", True),
    (["generate", "a cat", *G, "--size", "axb"], r"--size must be WIDTHxHEIGHT", True),
    (["generate", "a cat", *G, "--num-images", "0"], r"--num-images and --batch-size must be >= 1", True),
    (["generate", "a cat", *G, "--batch-size", "-2"], r"--batch-size must be >= 1", True),
    (
        ["generate", "a cat", *G, "--guidance", "nan"],
        r"guidance_scale must be a number finite, >= 0.0, got nan",
        True,
    ),
    (
        ["generate", "a cat", *G, "--guidance", "inf"],
        r"guidance_scale must be a number finite, >= 0.0, got inf",
        True,
    ),
    (["generate", "a cat", *G, "--steps", "-1"], r"steps must be an integer >= 1", True),
    (["generate", "a cat", *G, "--seed", "99999999999999999999"], r"--seed must be in \[0, ", True),
    (["generate", "a cat", *G, "--seed", "-5"], r"--seed must be in \[0, .*-1 or none: random", True),
    (["generate", "a cat", *G, "--cache-interval", "0"], r"--cache-interval must be an integer >= 1", True),
    (["generate", "a cat", *G, "--clip-skip", "-2"], r"--clip-skip must be >= 0", True),
    (["generate", "a cat", *G, "--scheduler", "euler-b"], r"invalid choice: 'euler-b'", True),
    (["generate", "a cat", *G, "--guidance-rescale", "2"], r"guidance_rescale must be a number in", True),
    # generate: models and weight files
    (["generate", "a cat", *G, "--model", "U/nope"], r"--model: folder .*nope does not exist", True),
    (
        ["generate", "a cat", *G, "--model", "U/image.png"],
        r"--model: .*image.png is not a \.safetensors",
        True,
    ),
    (
        ["generate", "a cat", *G, "--model", "U"],
        r"user\d* is not a diffusers model folder: model_index.json",
        False,
    ),
    (
        ["generate", "a cat", *G, "--model", "U/fake.safetensors"],
        r"fake.safetensors is not a readable safetensors file .*truncated or corrupt",
        False,
    ),
    (
        ["generate", "a cat", *G, "--lora", "U/lora.ckpt"],
        r"--lora: .*lora.ckpt is a pickle .*--allow-pickle",
        True,
    ),
    (
        ["generate", "a cat", *G, "--lora", "U/nope.safetensors"],
        r"--lora: file .*nope.safetensors does not",
        True,
    ),
    (
        ["generate", "a cat", *G, "--embedding", "U/notes.txt"],
        r"--embedding: .*notes.txt is not a \.safetensors",
        True,
    ),
    (
        ["generate", "a <lora:x:heavy> cat", *G, "--lora-dir", "U"],
        r"<lora:x:heavy>: the weight must be a number",
        True,
    ),
    (
        ["generate", "a <lora:../model/x> cat", *G, "--lora-dir", "U"],
        r"<lora:../model/x>: a LoRA name .*no folders",
        True,
    ),
    # output paths
    (
        ["generate", "a cat", *G, "-o", "U/image.png/x.png"],
        r"-o/--output: .*image.png is a file, not a folder",
        True,
    ),
    (["generate", "a cat", *G, "-o", "U/image.png"], r"output exists: .*image.png; pass --overwrite", True),
    (["generate", "a cat", *G, "-o", "OUT/x.jpg"], r"must be a \.png file", True),
    # img2img / inpaint input images
    ([*I2I, "U/nope.png", *G], r"--image: file .*nope.png does not exist", True),
    ([*I2I, "U/truncated.png", *G], r"--image: .*truncated.png is not an image file .*truncated", True),
    ([*I2I, "U/empty.png", *G], r"--image: .*empty.png is not an image file that PIL can read", True),
    ([*I2I, "U/text.png", *G], r"--image: .*text.png is not an image file that PIL can read", True),
    ([*I2I, "U", *G], r"--image: file .* does not exist", True),
    ([*I2I, "U/bomb.png", *G], r"--image: .*bomb.png is too large to open safely .*resize it", True),
    ([*I2I, "U/image.png", *G, "--strength", "1.5"], r"strength must be a number in \(0.0, 1.0\]", True),
    (
        [*I2I, "U/image.png", *G, "--strength", "0.2"],
        r"strength: 0.2 x num_inference_steps 2 .*0 steps",
        False,
    ),
    ([*I2I, "U/image.png", *G, "--size", "31x32"], r"multiples of 2", True),
    ([*INP, "U/truncated.png", *G], r"--mask: .*truncated.png is not an image file", True),
    (
        [*INP, "U/mask40.png", *G],
        r"--mask is 40x40 but --image is 32x32; give a mask of the image's size",
        True,
    ),
    ([*INP, "U/mask.png", *G, "--mask-blur", "-3"], r"mask_blur must be", True),
    (["inpaint", "a cat", "--image", "U/image.png", *G], r"--mask is required", True),
    # --from-png records
    (
        ["generate", "--from-png", "U/truncated.png", *G],
        r"--from-png: .*truncated.png is not an image file",
        True,
    ),
    (["generate", "--from-png", "U/image.png", *G], r"--from-png: .*image.png carries no generation", True),
    (
        ["generate", "--from-png", "U/record-list.png", *G],
        r"record of .* is not a valid generation record .*list",
        True,
    ),
    (
        ["generate", "--from-png", "U/record-types.png", *G],
        r"the record's 'prompt' is 5, which is not a",
        True,
    ),
    (["generate", "--from-png", "U/record-width.png", *G], r"the record's 'width' is 'big'", True),
    (["generate", "--from-png", "U/record-task.png", *G], r"the record's task 'upscale' is not one of", True),
    (["generate", "--from-png", "U/record-json.png", *G], r"is not a valid generation record", True),
    (
        ["generate", "--from-png", "U/a1111.png", *G],
        r"'parameters' text .* bad value \(Steps: 'many' is not",
        True,
    ),
    # train: configs and KEY=VALUE overrides
    (["train", "unet", "--config", "U/binary.yaml", "-o", "OUT/run"], r"binary.yaml is not UTF-8 text", True),
    (["train", "unet", "--config", "U/list.yaml", "-o", "OUT/run"], r"list.yaml must hold a mapping", True),
    (["train", "unet", "--config", "U/broken.yaml", "-o", "OUT/run"], r"broken.yaml is not valid YAML", True),
    (
        ["train", "unet", "--config", "U/nested.yaml", "-o", "OUT/run"],
        r"Did you mean 'optim.max_steps'\?",
        True,
    ),
    (
        [*TRAIN, "optim.learning_rate=[1"],
        r"override 'optim.learning_rate=\[1': the value is not valid YAML",
        True,
    ),
    ([*TRAIN, "optim.learning_rate=nan"], r"optim.learning_rate must be a finite number, got 'nan'", True),
    ([*TRAIN, "optim.learning_rate=.inf"], r"optim.learning_rate must be a finite number", True),
    ([*TRAIN, "optim.max_steps=1.5"], r"optim.max_steps must be a whole number", True),
    ([*TRAIN, "optim.batch_size=[1, 2]"], r"optim.batch_size must be a number", True),
    ([*TRAIN, "ema.decya=0.9"], r"Did you mean 'ema.decay'\?", True),
    ([*TRAIN, "data.reslution=64"], r"Did you mean 'data.resolution'\?", True),
    ([*TRAIN, "optim=3"], r"optim is a group of settings", True),
    ([*TRAIN, "data.resolution=0"], r"data.resolution must be at least 16 pixels, got 0", True),
    ([*TRAIN, "data.max_corrupt_fraction=2"], r"data.max_corrupt_fraction must be in \[0, 1\]", True),
    ([*TRAIN, "data.dataset=U/nope"], r"data.dataset: the folder .*nope does not exist", True),
    (
        ["train", "unet", "--config", "smoke-unet", "output_dir= "],
        r"output_dir is empty; set output_dir=DIR",
        True,
    ),
    ([*TRAIN, "base=U/model.ckpt"], r"no such folder; set base=", True),
    # export
    (["export", "U/nope", "OUT/e"], r"SOURCE: folder .*nope does not exist", True),
    (["export", "U/model", "U/image.png"], r"export: .*image.png exists; pass --overwrite", True),
    (
        ["export", "U/fake.safetensors", "OUT/e"],
        r"fake.safetensors is not a readable safetensors file",
        False,
    ),
    (["export", "U/model", "OUT/e", "--steps", "0"], r"steps must be an integer >= 1", True),
    # eval
    (
        ["eval", "compositional", "num_prompts=abc", "-o", "OUT/e"],
        r"num_prompts must be a number, got 'abc'",
        True,
    ),
    (["eval", "compositional", "num_prompt=3", "-o", "OUT/e"], r"Did you mean 'num_prompts'\?", True),
    (["eval", "fid", "--model", "U/nope", "-o", "OUT/e"], r"--model: folder .*nope does not exist", True),
    (["eval", "vae", "--config", "U/binary.yaml", "-o", "OUT/e"], r"binary.yaml is not UTF-8 text", True),
]


def _ids():
    return [f"{i:02d}-{' '.join(argv[:2])}" for i, (argv, _, _) in enumerate(CASES)]


@pytest.mark.parametrize(("argv", "message", "early"), CASES, ids=_ids())
def test_bad_input_is_one_clear_line(files, tmp_path, capsys, monkeypatch, argv, message, early):
    if early:
        monkeypatch.setattr(Components, "from_pretrained", _refuse_loading)
    monkeypatch.chdir(tmp_path)  # a run that wrongly started would write here, not into the repository
    names = {"MODEL": files / "model", "OUT": tmp_path / "out", "U": files}
    before = _hashes(files)
    try:
        code = cli.main([_fill(a, names) for a in argv])
    except SystemExit as exit:  # argparse's own errors (a choice, a type) exit with 2 and one line
        code = exit.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"latentforge {argv[0]}: error: "), err
    assert re.search(message, last), last
    assert _hashes(files) == before  # the user's files are unchanged, and nothing was added beside them
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no output, not even a folder


def _refuse_loading(*args, **kwargs):
    raise ModelLoaded("the model started loading before the bad input was reported")


def _fill(arg: str, names: dict) -> str:
    for name, path in names.items():
        arg = arg.replace(f"{name}/", f"{path}/") if arg != name else str(path)
    return arg
