"""Textual-inversion embeddings as A1111 and diffusers write them: the same images as diffusers'
`load_textual_inversion`, multi-vector tokens expanded, usable in the negative prompt; bad files change nothing."""

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from pipeline_helpers import generator, one_thread, quiet, reference, tiny  # noqa: F401
from safetensors.torch import save_file

from latentforge.pipelines.pipeline import TextToImagePipeline

DIM = 32  # the tiny text encoder's width


def _vectors(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, DIM, generator=torch.Generator().manual_seed(seed))


def _image(pipe, prompt, negative=None) -> np.ndarray:
    out = quiet(pipe)(
        prompt, negative_prompt=negative, num_inference_steps=3, generator=generator(0), output_type="np"
    )
    return out.images


def _pair():
    return TextToImagePipeline(tiny(fresh=True)), reference(StableDiffusionPipeline, tiny(fresh=True))


def test_a1111_safetensors_multi_vector_token_is_the_file_stem_and_matches_diffusers(tmp_path):
    file = tmp_path / "shiny-style.safetensors"
    save_file({"emb_params": _vectors(3)}, file)  # A1111: (n vectors, dim)
    ours, theirs = _pair()
    base = _image(ours, "a shiny-style circle")
    assert ours.load_textual_inversion(file) == "shiny-style"
    theirs.load_textual_inversion(str(file), token="shiny-style")
    assert ours.tokenizer.convert_tokens_to_ids("shiny-style_2") == len(ours.tokenizer) - 1
    for prompt, negative in (("a shiny-style circle", None), ("a circle", "shiny-style, blurry")):
        image = _image(ours, prompt, negative)
        assert np.abs(image - _image(theirs, prompt, negative)).max() <= 1e-4
    assert np.abs(_image(ours, "a shiny-style circle") - base).max() > 1e-3
    ours.load_textual_inversion(file, token="<other>")  # the same vectors under a second token
    _image(ours, "(<other>:1.3) and [shiny-style]")  # emphasis works on expanded tokens


def test_diffusers_learned_embeds_keeps_its_token(tmp_path):
    file = tmp_path / "learned_embeds.safetensors"
    save_file({"<cat-toy>": _vectors(1, seed=3)[0]}, file)
    ours, theirs = _pair()
    assert ours.load_textual_inversion(file) == "<cat-toy>"
    theirs.load_textual_inversion(str(file))
    assert np.abs(_image(ours, "a <cat-toy>") - _image(theirs, "a <cat-toy>")).max() <= 1e-4


def test_a1111_pickle_needs_permission(tmp_path):
    file = tmp_path / "old-style.pt"
    torch.save({"string_to_param": {"*": _vectors(2, seed=5)}, "name": "old-style", "step": 100}, file)
    ours, theirs = _pair()
    with pytest.raises(ValueError, match="is a pickle"):
        ours.load_textual_inversion(file)
    assert ours.load_textual_inversion(file, allow_pickle=True) == "old-style"
    theirs.load_textual_inversion(str(file))
    assert np.abs(_image(ours, "old-style art") - _image(theirs, "old-style art")).max() <= 1e-4


def test_bad_embeddings_change_nothing(tmp_path):
    pipe = TextToImagePipeline(tiny(fresh=True))
    vocabulary = len(pipe.tokenizer)
    save_file({"emb_params": torch.zeros(2, 48)}, tmp_path / "too-wide.safetensors")
    with pytest.raises(ValueError, match="incorrect shape"):
        pipe.load_textual_inversion(tmp_path / "too-wide.safetensors")
    save_file({"clip_l": torch.zeros(2, 32), "clip_g": torch.zeros(2, 64)}, tmp_path / "xl.safetensors")
    with pytest.raises(ValueError, match="SDXL embedding"):
        pipe.load_textual_inversion(tmp_path / "xl.safetensors")
    save_file({"a": torch.zeros(2), "b": torch.zeros(2)}, tmp_path / "two.safetensors")
    with pytest.raises(ValueError, match="not a textual-inversion embedding"):
        pipe.load_textual_inversion(tmp_path / "two.safetensors")
    save_file({"emb_params": _vectors(1)}, tmp_path / "my-fine-style.safetensors")
    pipe.load_textual_inversion(tmp_path / "my-fine-style.safetensors")
    with pytest.raises(ValueError, match="already in tokenizer vocabulary"):
        pipe.load_textual_inversion(tmp_path / "my-fine-style.safetensors")
    assert len(pipe.tokenizer) == vocabulary + 1
    assert pipe.text_encoder.get_input_embeddings().weight.shape[0] == vocabulary + 1
