"""Reports on disk, VAE reconstruction, emoji retrieval, FID/KID and CLIP-score reports."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from latentforge.data.emoji import FONT_PATH as emoji_font
from latentforge.evaluation import distribution, emoji_fidelity, reconstruction
from latentforge.evaluation.features import PixelFeatures
from latentforge.evaluation.report import Metric, Report, check_writable, image_grid
from latentforge.imaging import pil_to_tensor
from latentforge.models.component_files import load_vae


def _report(**kwargs) -> Report:
    images = [Image.new("RGB", (32, 32), c) for c in ("red", "green", "blue")]
    defaults = dict(
        name="demo",
        title="Demo",
        metrics=[Metric("psnr_db", float("inf"), "identical"), Metric("lpips", None, "not available")],
        rows=[{"prompt": "a | b", "correct": True}],
        images=images,
        marks=[True, False, None],
        settings={"seed": 0},
    )
    return Report(**{**defaults, **kwargs})


def test_report_writes_json_markdown_and_grid(tmp_path):
    paths = _report().write(tmp_path / "out")
    assert [p.name for p in paths] == ["demo.json", "demo.md", "demo.png"]
    data = json.loads(paths[0].read_text())  # strict JSON: inf is written as a string
    assert data["metrics"][0] == {"name": "psnr_db", "value": "inf", "note": "identical"}
    assert data["rows"] == [{"prompt": "a | b", "correct": True}] and data["settings"] == {"seed": 0}
    markdown = paths[1].read_text()
    assert "| lpips | unavailable | not available |" in markdown
    assert "| 0 | a \\| b | True |" in markdown and "![grid](demo.png)" in markdown
    grid = Image.open(paths[2])
    assert grid.size == (2 * 36, 2 * 36)  # 3 images of 32 px + 2 px frames, 2x2 grid
    assert grid.getpixel((0, 0)) == (40, 170, 60) and grid.getpixel((36, 0)) == (210, 40, 40)  # pass / fail
    with pytest.raises(FileExistsError, match="--overwrite"):
        _report().write(tmp_path / "out")
    check_writable(tmp_path / "out", "other")  # a different report may share the folder
    _report(title="Again").write(tmp_path / "out", overwrite=True)
    assert paths[1].read_text().startswith("# Again")


def test_image_grid_pads_mixed_sizes():
    grid = image_grid([Image.new("RGB", (16, 16), "red"), Image.new("RGB", (8, 12), "blue")] * 3, border=0)
    assert grid.size == (3 * 16, 2 * 16)


def test_vae_reconstruction_report():
    from latentforge.models.components import Components

    images = reconstruction.heldout_shapes_images(4, size=32, seed=0)
    assert images[0].size == (32, 32)
    assert (
        np.asarray(images[0]).tolist()
        == np.asarray(reconstruction.heldout_shapes_images(1, 32, 0)[0]).tolist()
    )
    model = Components.from_architecture("tiny", seed=0).vae
    report = reconstruction.evaluate_vae(model, images, batch_size=3)
    values = {m.name: m.value for m in report.metrics}
    # the report's numbers are the metrics of the decoded posterior modes
    rebuilt = reconstruction.reconstruct(model, images, batch_size=3)
    from latentforge.image_metrics import psnr, ssim

    assert values["psnr_db"] == pytest.approx(psnr(rebuilt, pil_to_tensor(images)).mean().item())
    assert values["ssim"] == pytest.approx(ssim(rebuilt, pil_to_tensor(images)).mean().item())
    assert values["psnr_db"] < 20 and values["lpips"] is None  # random weights reconstruct badly
    assert values["objects_kept"] == 0.0  # ... and lose every scene's objects
    assert len(report.images) == 8 and len(report.rows) == 4
    with pytest.raises(ValueError, match="num_images"):
        reconstruction.heldout_shapes_images(0)


def test_objects_kept_compares_detected_objects():
    from latentforge.data.shapes import render_scene, scene_for_prompt

    scene = scene_for_prompt("a red circle and a blue square", rng=0)
    image = render_scene(scene)
    assert reconstruction.objects_kept(image, image.copy())
    circle = next(o for o in scene.objects if o.shape == "circle")
    x0, y0, x1, y1 = circle.box
    recoloured = np.asarray(image).copy()
    red = (recoloured == recoloured[(y0 + y1) // 2, (x0 + x1) // 2]).all(-1)
    recoloured[red] = (0, 200, 0)  # the circle turns green: same shapes, wrong colour
    assert not reconstruction.objects_kept(image, Image.fromarray(recoloured))
    background = np.asarray(image)[0, 0]
    erased = np.asarray(image).copy()
    erased[red] = background  # the circle is gone
    assert not reconstruction.objects_kept(image, Image.fromarray(erased))


def test_objects_found_per_object_shape_and_size():
    from latentforge.data.shapes import Scene, render_scene, scene_for_prompt
    from latentforge.evaluation.detector import detect_objects

    scene = scene_for_prompt("a red star and a blue square", rng=0)
    image = render_scene(scene)
    star = next(o for o in scene.objects if o.shape == "star")
    erased = np.asarray(image).copy()
    x0, y0, x1, y1 = star.box
    erased[y0:y1, x0:x1] = np.asarray(image)[0, 0]  # the star is gone, the square stays
    found = reconstruction.objects_found(scene.objects, detect_objects(Image.fromarray(erased)))
    assert found == [o.shape != "star" for o in scene.objects]
    assert reconstruction.objects_found(scene.objects, detect_objects(image)) == [True, True]
    moved = Scene(
        [type(star)("star", "red", (x0 + 40, y0, x1 + 40, y1)) if o is star else o for o in scene.objects],
        scene.background,
    )  # the same star elsewhere is not the star that was drawn
    assert reconstruction.objects_found(moved.objects, detect_objects(image)) == [
        o is not star for o in scene.objects
    ]
    per_object = list(zip(scene.objects, found))
    values = {m.name: m.value for m in reconstruction.object_metrics(per_object, 64)}
    side = max(x1 - x0, y1 - y0)
    small = next(f"object_kept_star_{a}-{b}px" for a, b in reconstruction.SIZE_BINS if a <= side <= b)
    assert values["object_kept_star"] == 0.0 and values[small] == 0.0 and values["object_kept_square"] == 1.0
    assert values["object_kept"] == 0.5 and values["object_kept_circle"] is None
    held_out = reconstruction.heldout_shapes_images(1, 64, 0)[0]
    assert Scene.from_json(held_out.info["scene"]).objects  # the ground truth travels with the image
    # solidity: the drawn star's is a star's, a blurred one's rises towards a blob's, an erased one's is 1
    assert reconstruction.region_solidity(image, star) < 0.65
    blurred = image.filter(ImageFilter.GaussianBlur(2))
    assert 0.75 < reconstruction.region_solidity(blurred, star) < 1
    assert reconstruction.region_solidity(Image.fromarray(erased), star) == 1.0
    metric = reconstruction.small_star_solidity([image], [scene.objects], 64)
    assert metric.name == "star_14-20px_solidity"
    assert small == "object_kept_star_14-20px"  # a 16 px star
    assert metric.value == reconstruction.region_solidity(image, star)


def test_load_vae_from_model_or_vae_folder(tmp_path):
    from latentforge.models.components import Components

    components = Components.from_architecture("tiny", seed=0)
    components.save_pretrained(tmp_path / "model")
    assert load_vae(tmp_path / "model").config.latent_channels == 4
    assert load_vae(tmp_path / "model" / "vae").config.latent_channels == 4
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_vae(tmp_path)


def test_retrieval_ranks_by_hand():
    gallery = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    queries = np.array([[0.9, 0.1], [0.1, 0.9], [0.9, 0.1]])
    ranks = emoji_fidelity.retrieval_ranks(queries, gallery, [0, 1, 2])
    assert ranks.tolist() == [0, 0, 3]  # query 2 is nearest item 0, then 1/3, last item 2
    assert emoji_fidelity.top_k_accuracy(ranks, 1) == pytest.approx(2 / 3)
    # a constant feature space ties everything: the target then ranks last, not first
    assert emoji_fidelity.retrieval_ranks(np.ones((2, 3)), np.ones((5, 3)), [0, 4]).tolist() == [4, 4]


@pytest.mark.skipif(
    not emoji_font.is_file(), reason=f"{emoji_font} missing: sudo apt-get install fonts-noto-color-emoji"
)
def test_emoji_gallery_matches_the_dataset_and_retrieval_of_gallery_images_is_perfect():
    from latentforge.data.emoji import emoji_dataset

    gallery, names = emoji_fidelity.emoji_gallery(size=32)
    assert len(names) == len(set(names)) > 1000
    sample = emoji_dataset(num_samples=3, seed=0, size=32, skin_tones=False)
    for row in sample:
        index = names.index(row["text"])
        assert np.array_equal(np.asarray(row["image"].convert("RGB")), np.asarray(gallery[index]))
    targets = [5, 100, 900]
    report = emoji_fidelity.emoji_report(
        [gallery[t] for t in targets], targets, gallery, names, PixelFeatures()
    )
    values = {m.name: m.value for m in report.metrics}
    assert values["top1"] == 1.0 and values["top5"] == 1.0
    assert "pixels 16x16" in report.metrics[0].note
    wrong = emoji_fidelity.emoji_report(
        [gallery[t] for t in targets], [6, 101, 901], gallery, names, PixelFeatures()
    )
    assert {m.name: m.value for m in wrong.metrics}["top1"] == 0.0


def test_fid_report_is_small_for_the_same_distribution_and_large_for_a_collapsed_one():
    reference, captions = distribution.shapes_reference_set(40, size=32, seed=0)
    second, _ = distribution.shapes_reference_set(40, size=32, seed=1)
    assert len(captions) == 40 and captions != distribution.shapes_reference_set(40, 32, 1)[1]
    # a collapsed generator: every image black. (Flat images of random colours are NOT far in pixel
    # space: most pixels of a shapes scene are its plain background. Pixels are a weak feature space.)
    noise = [Image.new("RGB", (32, 32), "black")] * 40
    same = distribution.distribution_report(second, reference, second, PixelFeatures())
    bad = distribution.distribution_report(noise, reference, second, PixelFeatures())
    fid_same, fid_bad = (next(m.value for m in r.metrics if m.name == "fid") for r in (same, bad))
    kid_same, kid_bad = (next(m.value for m in r.metrics if m.name == "kid") for r in (same, bad))
    # pixel-space FID of 40 images is dominated by small-sample bias; the floor row reports exactly that
    assert next(m.value for m in same.metrics if m.name == "fid_reference_floor") == pytest.approx(fid_same)
    assert fid_bad > 3 * fid_same and kid_bad > 10 * abs(kid_same)
    assert all("features: pixels 16x16" in m.note for m in same.metrics if m.name.startswith("fid"))


def test_clip_score_report_uses_the_given_clip():
    class FakeClip:
        """Embeds an image by its mean colour and a text by whether it says 'red'."""

        name = "fake clip"

        def encode_images(self, images):
            return torch.from_numpy(
                np.stack([np.asarray(im, dtype=float).mean((0, 1)) / 255 for im in images])
            )

        def encode_texts(self, texts):
            return torch.tensor([[1.0, 0.0, 0.0] if "red" in t else [0.0, 0.0, 1.0] for t in texts])

    red, blue = Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))
    report = distribution.clip_score_report(
        [red, red], [red, blue], ["a red circle", "a blue star"], FakeClip()
    )
    values = {m.name: m.value for m in report.metrics}
    assert values["clip_score"] == pytest.approx(50.0)  # one match (100), one orthogonal pair (0)
    assert values["clip_score_ground_truth"] == pytest.approx(100.0)
    assert values["clip_score_std"] == pytest.approx(math.sqrt(2) * 50)
    assert "fake clip" in report.metrics[0].note


def test_reference_sets_are_seeded_apart_from_training():
    # the training dataset seeds scene i with 'shapes:<seed>:<i>'; evaluation uses other seeds
    from latentforge.data.shapes import render_scene, sample_scene

    training = render_scene(sample_scene(random.Random("shapes:0:0"), size=32))
    assert not np.array_equal(
        np.asarray(training), np.asarray(reconstruction.heldout_shapes_images(1, 32, 0)[0])
    )
