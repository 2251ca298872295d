"""Bad and odd input through the Python API (issue 21 item 1): the pipelines refuse NaN/Inf or mis-sized
tensors before any network runs, `Components` names the damaged file of a model folder, and valid-but-odd
inputs work as a viewer shows them: alpha, palette, 16-bit, CMYK, EXIF rotation, odd unicode, long prompts."""

from __future__ import annotations

import shutil

import numpy as np
import PIL.Image
import pytest
import torch
from pipeline_helpers import PROMPT, SIZE, box_mask, guarded_pipelines, random_image, tiny
from safetensors.torch import load_file, save_file

from latentforge import ImageToImagePipeline, TextToImagePipeline
from latentforge.imaging import normalized
from latentforge.models.components import Components
from latentforge.pipelines.image_inputs import load_image, to_tensor
from latentforge.pipelines.prompts import encode_prompt


@pytest.fixture(scope="module")
def pipes():
    with guarded_pipelines(("unet", "vae")) as pipelines:
        yield pipelines


LATENT = (1, 4, SIZE // 2, SIZE // 2)
WIDTH = tiny().unet.config.cross_attention_dim


def _with(shape, index, value):
    tensor = torch.zeros(shape)
    tensor.view(-1)[index] = value
    return tensor


NAN_IMAGE = _with((1, 3, SIZE, SIZE), 5, float("nan"))
TENSOR_CASES = [
    ({"latents": _with(LATENT, 7, float("nan"))}, r"latents holds 1 NaN/Inf value\(s\) of 1024"),
    ({"latents": _with(LATENT, 0, float("inf"))}, r"latents holds 1 NaN/Inf"),
    (
        {"latents": np.zeros(LATENT, np.float32)},
        r"latents must be a floating-point torch.Tensor, got ndarray",
    ),
    ({"latents": torch.zeros(LATENT, dtype=torch.long)}, r"latents must be a floating-point torch.Tensor"),
    (
        {"prompt": None, "prompt_embeds": _with((1, 77, WIDTH), 3, float("nan"))},
        r"prompt_embeds holds 1 NaN/Inf",
    ),
    (
        {
            "prompt": None,
            "prompt_embeds": torch.zeros(1, 77, WIDTH),
            "negative_prompt_embeds": _with((1, 77, WIDTH), 0, -float("inf")),
        },
        r"negative_prompt_embeds holds 1 NaN/Inf",
    ),
    (
        {"prompt": None, "prompt_embeds": torch.zeros(1, 77, WIDTH + 1)},
        rf"prompt_embeds: the last dimension is {WIDTH + 1} but .* width {WIDTH} \(cross_attention_dim\)",
    ),
    (
        {
            "prompt": None,
            "prompt_embeds": torch.zeros(1, 77, WIDTH),
            "negative_prompt_embeds": torch.zeros(1, 76, WIDTH),
        },
        r"prompt_embeds \(1, 77, \d+\) and negative_prompt_embeds \(1, 76, \d+\) must have the same shape",
    ),
]


@pytest.mark.parametrize("task", ["txt2img", "img2img", "inpaint"])
@pytest.mark.parametrize(("kwargs", "message"), TENSOR_CASES)
def test_bad_tensors_are_refused_before_sampling(pipes, task, kwargs, message):
    inputs = {
        "img2img": {"image": random_image()},
        "inpaint": {"image": random_image(), "mask_image": box_mask()},
    }
    with pytest.raises(ValueError, match=message):
        pipes[task](**{"prompt": PROMPT, "num_inference_steps": 2, **inputs.get(task, {}), **kwargs})


@pytest.mark.parametrize(
    ("task", "kwargs", "message"),
    [
        ("img2img", {"image": NAN_IMAGE}, r"image: values must be in \[0, 1\], got \[nan"),
        ("img2img", {"image": torch.full((1, 3, SIZE, SIZE), 2.0)}, r"image: values must be in \[0, 1\]"),
        ("img2img", {"image": "no/such/file.png"}, r"image: file no/such/file.png does not exist"),
        (
            "img2img",
            {"image": [random_image(), random_image(size=16)]},
            r"image: the images have different sizes",
        ),
        (
            "inpaint",
            {"image": random_image(), "mask_image": np.zeros((SIZE, SIZE, 3))},
            r"mask_image: .*3 channels",
        ),
        (
            "inpaint",
            {"image": random_image(), "mask_image": box_mask(size=16)},
            r"mask_image is 16x16 but image is",
        ),
        ("img2img", {"image": 42}, r"image: expected a file path, PIL image, .* got int"),
    ],
)
def test_bad_images_are_refused_before_sampling(pipes, task, kwargs, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        pipes[task](PROMPT, num_inference_steps=2, **kwargs)


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path):
    with PIL.Image.new("1", (1, 1)) as small:
        small.resize((20000, 20000)).save(tmp_path / "bomb.png")
    with pytest.raises(ValueError, match=r"image: .*bomb.png is too large to open safely .*resize it"):
        to_tensor(str(tmp_path / "bomb.png"), "image", 3)


# Valid but odd images: the pixels a viewer shows.
def test_transparent_pixels_are_seen_on_white_and_mask_transparency_means_keep(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 255  # red everywhere, opaque only on the left half
    rgba[:, :4, 3] = 255
    PIL.Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    pixels = to_tensor(str(tmp_path / "alpha.png"), "image", 3)[0]
    assert torch.equal(pixels[:, :, :4], torch.tensor([1.0, 0, 0])[:, None, None].expand(3, 8, 4))
    assert torch.equal(pixels[:, :, 4:], torch.ones(3, 8, 4))  # transparent: white, not the hidden red
    la = np.zeros((8, 8, 2), np.uint8)
    la[..., 0] = 255
    la[:4, :, 1] = 255  # a white mask, opaque only on the top half
    mask = to_tensor(PIL.Image.fromarray(la, "LA"), "mask_image", 1)[0, 0]
    assert bool((mask[:4] == 1).all()) and bool((mask[4:] == 0).all())


def test_palette_16_bit_and_cmyk_images_give_their_colours(tmp_path):
    palette = PIL.Image.new("P", (4, 4))
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    palette.paste(1, (0, 0, 4, 4))
    palette.info["transparency"] = 0  # index 0 is transparent, index 1 (used) is opaque green
    palette.save(tmp_path / "palette.png")
    assert tuple(np.asarray(load_image(tmp_path / "palette.png"))[0, 0]) == (10, 200, 30)
    grey16 = PIL.Image.fromarray(np.full((4, 4), 32896, np.uint16))  # 50 % grey in 16 bits
    grey16.save(tmp_path / "grey16.png")
    assert PIL.Image.open(tmp_path / "grey16.png").mode.startswith("I")
    assert tuple(np.asarray(load_image(tmp_path / "grey16.png"))[0, 0]) == (
        128,
        128,
        128,
    )  # not clipped white
    PIL.Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=100)
    red = np.asarray(load_image(tmp_path / "cmyk.jpg"))[0, 0].astype(int)
    assert red[0] > 240 and red[1] < 20 and red[2] < 20


def test_exif_rotation_is_applied_and_a_broken_exif_block_is_ignored(tmp_path):
    image = np.zeros((2, 4, 3), np.uint8)  # 4 wide, 2 high; the top-left pixel is red
    image[0, 0] = (255, 0, 0)
    stored = PIL.Image.fromarray(image)
    exif = stored.getexif()
    exif[0x0112] = 6  # the camera was turned: show the picture rotated 90 degrees clockwise
    stored.save(tmp_path / "rotated.png", exif=exif)
    shown = np.asarray(load_image(tmp_path / "rotated.png"))
    assert shown.shape == (4, 2, 3)  # 2 wide, 4 high
    assert tuple(shown[0, 1]) == (255, 0, 0)  # the red corner is now top-right
    exif[0x0112] = 99  # no such orientation
    stored.save(tmp_path / "odd-exif.png", exif=exif)
    assert np.asarray(normalized(PIL.Image.open(tmp_path / "odd-exif.png"))).shape == (2, 4, 3)


def test_an_odd_image_runs_through_img2img():
    rgba = random_image().convert("RGBA")
    rgba.putalpha(128)
    out = ImageToImagePipeline.from_components(tiny(fresh=True))(
        PROMPT, rgba, num_inference_steps=2, generator=0
    )
    assert np.asarray(out.images[0]).shape == (SIZE, SIZE, 3)


# Prompts: odd characters and thousands of tokens.
def test_invisible_characters_do_not_change_the_prompt():
    components = tiny()

    def embeds(text):
        return encode_prompt(components.tokenizer, components.text_encoder, [text])[0]

    plain = embeds("a red circle, a blue square")
    noisy = embeds("a red\x00 circle,\x1b a\u202e blue\ufeff square\u200b\n")
    assert torch.equal(plain, noisy)
    assert not torch.equal(plain, embeds("a red circle, a green square"))  # the check can fail
    emoji = embeds("\U0001f468\u200d\U0001f469 family")  # the emoji joiner is kept
    assert not torch.equal(emoji, embeds("\U0001f468\U0001f469 family"))


def test_a_prompt_of_thousands_of_tokens_is_encoded_whole():
    components = tiny()
    embeds = encode_prompt(components.tokenizer, components.text_encoder, ["cat " * 3000])[0]
    assert embeds.shape[1] == 77 * 40  # 3000 tokens in chunks of 75, none dropped
    assert bool(torch.isfinite(embeds).all())


# Components: a damaged model folder names the file.
def _damage_unet(folder, how):
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    if how == "truncated":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif how == "config":
        (folder / "unet" / "config.json").write_text("{oops")
    elif how == "missing":
        shutil.rmtree(folder / "unet")
    elif how in ("index", "index-list"):
        (folder / "model_index.json").write_text("garbage" if how == "index" else "[1, 2]")
    else:
        tensors = load_file(weights)
        key = "conv_in.weight"
        tensors[key] = torch.zeros(3) if how == "shape" else tensors[key].fill_(float("nan"))
        save_file(tensors, weights)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny"
    tiny().save_pretrained(path)
    return path


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("truncated", r"unet: could not load .*unet .*corrupt or does not match the config.*SafetensorError"),
        ("config", r"unet/config.json is not valid JSON"),
        ("missing", r"unet: folder .*unet is missing from the model"),
        ("shape", r"unet: could not load .*conv_in.weight expected shape"),
        ("index", r"model_index.json: .*model_index.json is not valid JSON"),
        ("index-list", r"model_index.json is not a pipeline index .*_class_name"),
    ],
)
def test_a_damaged_model_folder_names_the_file(saved, tmp_path, how, message):
    folder = tmp_path / "model"
    shutil.copytree(saved, folder)
    _damage_unet(folder, how)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        Components.from_pretrained(folder)


def test_nan_weights_are_named_instead_of_an_overflow(saved, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(saved, folder)
    _damage_unet(folder, "nan")
    pipe = TextToImagePipeline.from_pretrained(folder)
    with pytest.raises(
        FloatingPointError, match=r"the U-Net's weights hold NaN or Inf .*conv_in.weight.*damaged"
    ):
        pipe(PROMPT, num_inference_steps=1, generator=0)
