"""The CLIP trainer on the tiny architecture: trains, reports retrieval, and exports a CLIPTextModel equal to
the trained open_clip text tower, plus the whole open_clip model that open_clip itself loads."""

import json

import open_clip
import pytest
import torch
from transformers import CLIPTextModel

from latentforge.config_loader import load_config
from latentforge.data.shapes import render_scene, sample_scene
from latentforge.data.transforms import ImageCaptionTransform
from latentforge.models.openclip import open_clip_token_features
from latentforge.models.tokenizer import load_tokenizer
from latentforge.resources import architecture_dir, config_file
from latentforge.training import clip
from latentforge.training.clip_model import ShortTextCLIP


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("clip")
    config = load_config(clip.CLIPTrainConfig, config_file("train", "smoke-clip"), [f"output_dir={out}"])
    return config, clip.train(config)


def test_export_matches_the_trained_open_clip_model(trained):
    config, model_dir = trained
    oc_model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{model_dir / 'open_clip'}")
    text_encoder = CLIPTextModel.from_pretrained(model_dir / "text_encoder")
    tokenizer = load_tokenizer(model_dir / "tokenizer")
    ids = torch.tensor(
        tokenizer(["two blue stars above a red circle"], padding="max_length", max_length=77).input_ids
    )
    with torch.no_grad():
        ours = text_encoder(ids).last_hidden_state
    torch.testing.assert_close(ours, open_clip_token_features(oc_model.eval(), ids), atol=1e-5, rtol=1e-5)
    # the same shape as the architecture's text encoder, so it drops into that U-Net
    arch = json.loads((architecture_dir("tiny") / "text_encoder" / "config.json").read_text())
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act"):
        assert getattr(text_encoder.config, key) == arch[key], key
    # trained: the text tower moved away from its seeded initialisation
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        initial = open_clip.CLIP(**clip.clip_model_config(config))
    assert not torch.equal(initial.token_embedding.weight, oc_model.token_embedding.weight)
    # open_clip's own preprocessing of the saved config gives the [-1, 1] pixels the tower was trained on
    image = render_scene(sample_scene(0, size=32))
    expected, _ = ImageCaptionTransform(32)(image, "", torch.Generator())
    torch.testing.assert_close(preprocess(image), expected, atol=2e-6, rtol=0)


def test_retrieval_metrics_are_reported(trained):
    _, model_dir = trained
    metrics = json.loads((model_dir / "clip_metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["held_out_pairs"] == 8
    for key in ("image_to_text_top1", "text_to_image_top1"):
        assert 0.0 <= metrics[key] <= 1.0
    assert 0 < metrics["chance_top1"] < 1
    assert metrics["export_max_abs_diff"] < 1e-4


def test_short_text_pass_equals_the_full_77_token_pass(trained):
    _, model_dir = trained
    model = open_clip.create_model(f"local-dir:{model_dir / 'open_clip'}").eval()
    tokenizer = load_tokenizer(model_dir / "tokenizer")
    texts = ["a red circle", "three yellow squares on a black background", ""]
    ids = torch.tensor(tokenizer(texts, padding="max_length", max_length=77).input_ids)
    with torch.no_grad():
        short = ShortTextCLIP(model).encode_text(ids)
        full = model.encode_text(ids, normalize=True)
    torch.testing.assert_close(short, full, atol=1e-6, rtol=1e-5)
