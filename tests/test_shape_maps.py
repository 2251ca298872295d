"""The U-Net trainer's shape-map loss (`shape_map_weight`): its targets from the scenes, its cross-entropy, the
head on the chosen U-Net layer, and a run that trains, resumes exactly and exports no head."""

import json
import shutil

import datasets
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file
from scene_loss_helpers import assert_refused_before_work, train_weights

from latentforge.data.data_config import DataConfig
from latentforge.data.training_data import load_splits
from latentforge.models.components import Components
from latentforge.training.shape_maps import (
    CLASSES,
    ShapeMapLoss,
    cell_centers,
    cell_fractions,
    check_scenes,
    scene_class_map,
    soft_cross_entropy,
)

SHAPE_MAP = ["data.random_flip=false", "shape_map_weight=0.5", "optim.max_steps=4", "checkpoint.keep_last=0"]


def _scene(*objects: tuple[str, tuple[int, int, int, int]], size: int = 16) -> str:
    items = [{"shape": shape, "color": "red", "box": list(box)} for shape, box in objects]
    return json.dumps({"objects": items, "background": "white", "size": size})


def test_cell_fractions_are_the_class_shares_of_each_cell():
    square, circle = CLASSES.index("square"), CLASSES.index("circle")
    (shares,) = cell_fractions([_scene(("square", (4, 0, 12, 8)))], (4, 4))
    expected = torch.zeros(len(CLASSES), 4, 4)
    expected[square, 0:2, 1:3] = 1  # the square's 8x8 px are exactly cells (0-1, 1-2) of 4 px
    expected[0] = 1 - expected[square]
    assert torch.equal(shares.float(), expected)

    (shares,) = cell_fractions([_scene(("circle", (0, 0, 16, 16)))], (4, 4)).float()
    assert torch.allclose(shares.sum(0), torch.ones(4, 4), atol=1e-3)
    assert shares[circle, 1:3, 1:3].min() == 1  # the middle lies inside the circle
    corner = shares[circle, 0, 0].item()
    assert 0 < corner < 0.5  # a quarter circle leaves most of a corner cell to the background
    assert shares[0, 0, 0] == pytest.approx(1 - corner, abs=1e-3)


def test_scene_class_map_draws_each_object_with_its_class_in_its_box():
    scene = json.loads(_scene(("triangle", (0, 0, 8, 8)), ("star", (8, 8, 16, 16))))
    classes = scene_class_map(scene)
    assert set(classes[:8, :8].ravel()) == {0, CLASSES.index("triangle")}
    assert set(classes[8:, 8:].ravel()) == {0, CLASSES.index("star")}
    assert (classes[:8, 8:] == 0).all() and (classes[8:, :8] == 0).all()
    assert classes[7, 4] == CLASSES.index("triangle") and classes[0, 0] == 0  # its base, not its corner


def test_cell_centers_peak_once_per_object_at_its_centre():
    scene = _scene(
        ("circle", (0, 0, 16, 16)), ("star", (40, 40, 64, 64)), ("square", (42, 2, 50, 10)), size=64
    )
    heat = cell_centers([scene], (16, 16))[0, 0].float()
    assert heat.min() >= 0 and heat.max() <= 1
    peaks = heat == F.max_pool2d(heat[None, None], 3, stride=1, padding=1)[0, 0]
    peaks &= heat > 0.5
    rows, cols = peaks.nonzero().T
    # the circle's centre (8, 8) px is the corner of cells 1-2: four cells tie, as do the star's (52, 52) px;
    # the square's (46, 6) px is the middle of cell (1, 11)
    assert sorted(zip(rows.tolist(), cols.tolist())) == [
        (1, 1),
        (1, 2),
        (1, 11),
        (2, 1),
        (2, 2),
        (12, 12),
        (12, 13),
        (13, 12),
        (13, 13),
    ]
    assert heat[1, 11] == pytest.approx(1.0, abs=1e-3)
    # a bigger object spreads wider: the star's heat two cells from its centre exceeds the circle's
    assert heat[12, 15] > heat[1, 4] > 0
    assert heat[8, 6] < 0.01  # far from every object


def test_the_centre_term_adds_a_binary_cross_entropy_on_one_more_channel():
    unet = Components.from_architecture("tiny", seed=0).unet
    scene = _scene(("square", (0, 0, 8, 8)))
    shares = cell_fractions([scene] * 2, (8, 8))
    targets = torch.cat([shares, cell_centers([scene] * 2, (8, 8))], dim=1)
    with pytest.raises(ValueError, match="targets have 5 channels, the head predicts 6"):
        ShapeMapLoss(unet, "down_blocks.0", shares, centers_weight=2.0)
    shape_map = ShapeMapLoss(unet, "down_blocks.0", targets, centers_weight=2.0)
    assert shape_map.head.net[2].out_channels == len(CLASSES) + 1
    size = unet.config.sample_size
    text = torch.zeros(2, 3, unet.config.cross_attention_dim)
    with torch.no_grad():
        unet(torch.randn(2, unet.config.in_channels, size, size), torch.tensor([10, 500]), text)
    features = shape_map._features
    loss = shape_map.loss(torch.tensor([0, 1]))
    logits = shape_map.head(features, (8, 8))
    expected = soft_cross_entropy(logits[:, :-1], shares) + 2.0 * F.binary_cross_entropy_with_logits(
        logits[:, -1:], targets[:, -1:].float()
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_soft_cross_entropy_matches_torch_for_soft_and_hard_targets():
    logits = torch.randn(2, 5, 3, 3)
    soft = torch.softmax(torch.randn(2, 5, 3, 3), dim=1)
    assert soft_cross_entropy(logits, soft).item() == pytest.approx(
        F.cross_entropy(logits, soft).item(), rel=1e-5
    )
    labels = torch.randint(0, 5, (2, 3, 3))
    hard = F.one_hot(labels, 5).permute(0, 3, 1, 2)
    assert soft_cross_entropy(logits, hard).item() == pytest.approx(F.cross_entropy(logits, labels).item())


def test_the_head_reads_the_chosen_layer_and_its_loss_reaches_the_unet_up_to_it():
    unet = Components.from_architecture("tiny", seed=0).unet
    targets = cell_fractions([_scene(("square", (0, 0, 8, 8)))] * 2, (8, 8))
    shape_map = ShapeMapLoss(unet, "down_blocks.0", targets)
    assert shape_map.head.net[0].in_channels == unet.config.block_out_channels[0]
    size = unet.config.sample_size
    text = torch.zeros(2, 3, unet.config.cross_attention_dim)
    unet(torch.randn(2, unet.config.in_channels, size, size), torch.tensor([10, 500]), text)
    loss = shape_map.loss(torch.tensor([0, 1]))
    loss.backward()
    assert loss.item() > 0
    assert unet.down_blocks[0].resnets[0].conv1.weight.grad.abs().sum() > 0
    assert unet.conv_in.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in unet.up_blocks.parameters()), "layers after the tap must get nothing"
    with pytest.raises(RuntimeError, match="has not run since the last loss"):
        shape_map.loss(torch.tensor([0]))
    with pytest.raises(ValueError, match="shape_map_layer='down_blocks.9' is not a layer of this U-Net"):
        ShapeMapLoss(unet, "down_blocks.9", targets)


def test_a_dataset_without_scenes_is_refused():
    data = datasets.Dataset.from_dict({"image": [None], "text": ["a photo"]})
    with pytest.raises(ValueError, match="needs each image's scene.*set shape_map_weight=0"):
        check_scenes(data)


@pytest.mark.parametrize(
    "bad",
    [
        "data.buckets=true",
        "shape_map_weight=-1",
        "shape_map_centers=-1",
        "shape_map_weight=0 shape_map_centers=1",
    ],
)
def test_settings_the_loss_cannot_use_are_refused_before_any_work(tmp_path, bad):
    assert_refused_before_work(tmp_path, "shape_map_weight", *SHAPE_MAP, *bad.split())


def _train(out, *overrides: str) -> dict[str, torch.Tensor]:
    return train_weights(out, *SHAPE_MAP, *overrides)


def test_a_run_with_the_loss_trains_resumes_exactly_and_exports_no_head(tmp_path):
    straight = _train(tmp_path / "straight")
    without = _train(tmp_path / "without", "shape_map_weight=0")
    assert max((straight[k] - without[k]).abs().max().item() for k in straight) > 1e-4, (
        "the loss changed nothing"
    )
    # the head is checkpointed beside the U-Net, and not exported
    checkpoint = tmp_path / "straight" / "checkpoints" / "checkpoint-2"
    heads = [load_file(f) for f in checkpoint.glob("model_*.safetensors")]
    assert any(set(h) == {"net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"} for h in heads)
    assert not any("net.0.weight" in k for k in straight)
    # a run that lost its last checkpoint resumes from step 2, head included, and ends where the straight one did
    resumed = tmp_path / "resumed"
    _train(resumed)
    for folder in ("checkpoints/checkpoint-4", "model"):
        shutil.rmtree(resumed / folder)
    again = _train(resumed, "checkpoint.resume=latest")
    worst = max((straight[k] - again[k]).abs().max().item() for k in straight)
    assert worst <= 1e-6, f"resumed run differs from the straight run by {worst}"
    # the centre term: one more output of the head, and other weights than the straight run's
    centers = _train(tmp_path / "centers", "shape_map_centers=1")
    assert max((centers[k] - straight[k]).abs().max().item() for k in centers) > 1e-4, (
        "the term changed nothing"
    )
    heads = [
        load_file(f)
        for f in (tmp_path / "centers" / "checkpoints" / "checkpoint-2").glob("model_*.safetensors")
    ]
    (head,) = [h for h in heads if "net.2.weight" in h]
    assert head["net.2.weight"].shape[0] == len(CLASSES) + 1


def test_the_scene_column_is_kept_only_where_every_source_has_it(tmp_path):
    Image.new("RGB", (32, 32), "red").save(tmp_path / "a.png")
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file_name": "a.png", "text": "a red photo"}) + "\n")
    shapes = DataConfig(dataset="shapes", num_samples=3, resolution=32, held_out_fraction=0.0)
    assert "scene" not in load_splits(shapes)[0].column_names  # only when asked for
    check_scenes(load_splits(shapes, ("scene",))[0])
    mixed = DataConfig(dataset=f"shapes + {tmp_path}", num_samples=3, resolution=32, held_out_fraction=0.0)
    joined = load_splits(mixed, ("scene",))[0]
    assert len(joined) == 4 and set(joined.column_names) == {"image", "text"}
    with pytest.raises(ValueError, match="needs each image's scene"):
        check_scenes(joined)
