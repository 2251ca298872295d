"""Tests of image/caption sources and the skipping torch dataset: imagefolder, .txt folders, save_to_disk, corrupt files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from latentforge.data.image_dataset import ImageCaptionDataset, collate_skip_none
from latentforge.data.sources import load_image_text_dataset
from latentforge.data.transforms import ImageCaptionTransform

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]


def _write_images(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.new("RGB", (24 + 8 * i, 16), COLOURS[i % 4]).save(folder / name)


def _corrupt(folder):
    good = folder / "ok.png"
    Image.new("RGB", (16, 16), (9, 9, 9)).save(good)
    (folder / "truncated.png").write_bytes(good.read_bytes()[:60])
    (folder / "noise.jpg").write_bytes(np.random.default_rng(0).bytes(500))
    good.unlink()
    return ["truncated.png", "noise.jpg"]


@pytest.fixture
def imagefolder(tmp_path):
    names = ["a.png", "b.png", "c.jpg"]
    _write_images(tmp_path, names)
    names += _corrupt(tmp_path)
    with open(tmp_path / "metadata.jsonl", "w") as f:
        for name in names:
            f.write(json.dumps({"file_name": name, "caption": f"caption of {name}"}) + "\n")
    return tmp_path


def test_imagefolder_with_metadata(imagefolder):
    ds = load_image_text_dataset(str(imagefolder), caption_column="caption")
    assert len(ds) == 5 and set(ds.column_names) >= {"image", "caption"}
    assert "caption of b.png" in ds["caption"]


def test_wrong_column_names_list_the_available_ones(imagefolder):
    with pytest.raises(
        ValueError, match=r"no column 'text' for caption_column; available columns: .*caption"
    ):
        load_image_text_dataset(str(imagefolder))
    with pytest.raises(ValueError, match="image_column"):
        load_image_text_dataset(str(imagefolder), image_column="img", caption_column="caption")


def test_corrupt_images_are_skipped_and_counted(imagefolder):
    ds = load_image_text_dataset(str(imagefolder), caption_column="caption")
    torch_ds = ImageCaptionDataset(ds, ImageCaptionTransform(16), caption_column="caption")
    loader = torch.utils.data.DataLoader(torch_ds, batch_size=5, collate_fn=collate_skip_none)
    (batch,) = list(loader)
    assert batch["skipped"] == 2 and torch_ds.skipped == 2
    assert batch["pixel_values"].shape == (3, 3, 16, 16)
    assert batch["pixel_values"].min() >= -1 and batch["pixel_values"].max() <= 1
    assert sorted(batch["text"]) == [f"caption of {n}" for n in ("a.png", "b.png", "c.jpg")]
    assert [ds["caption"][i] for i in batch["index"].tolist()] == batch["text"]
    # a batch of only unreadable images is empty, not an error
    empty = collate_skip_none([None, None])
    assert empty["pixel_values"].shape[0] == 0 and empty["skipped"] == 2


def test_txt_caption_folder(tmp_path):
    _write_images(tmp_path / "sub", ["x.png", "y.jpg"])
    (tmp_path / "sub" / "x.txt").write_text("a red thing\n")
    (tmp_path / "sub" / "y.txt").write_text("a green thing")
    ds = load_image_text_dataset(str(tmp_path))
    assert ds["text"] == ["a red thing", "a green thing"]
    assert ds[0]["image"].getpixel((0, 0)) == COLOURS[0]
    (tmp_path / "sub" / "y.txt").unlink()
    with pytest.raises(ValueError, match=r"1 image\(s\) have no same-name .txt caption"):
        load_image_text_dataset(str(tmp_path))


def test_save_to_disk_folder_and_splits(tmp_path):
    import datasets

    ds = load_image_text_dataset("shapes", params={"num_samples": 4, "seed": 5, "size": 32})
    ds.save_to_disk(str(tmp_path / "single"))
    again = load_image_text_dataset(str(tmp_path / "single"))
    assert again["text"] == ds["text"]
    datasets.DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(str(tmp_path / "dict"))
    assert len(load_image_text_dataset(str(tmp_path / "dict"), split="test")) == 1
    with pytest.raises(ValueError, match=r"no split 'val'; available splits: \['test', 'train'\]"):
        load_image_text_dataset(str(tmp_path / "dict"), split="val")


def test_builtin_sources_and_bad_sources(tmp_path):
    ds = load_image_text_dataset("shapes:num_samples=3,size=32,seed=1")
    assert len(ds) == 3 and ds[0]["image"].size == (32, 32)
    assert (
        ds["text"]
        == load_image_text_dataset("shapes", params={"num_samples": 3, "size": 32, "seed": 1})["text"]
    )
    with pytest.raises(ValueError, match="allowed keys for shapes"):
        load_image_text_dataset("shapes:colours=3")
    single = load_image_text_dataset("shapes:num_samples=6,size=32,kind=single")
    assert [len(json.loads(scene)["objects"]) for scene in single["scene"]] == [1] * 6
    assert all(" and " not in text and " of " not in text for text in single["text"])
    big = load_image_text_dataset("shapes:num_samples=6,kind=single,min_side=40,max_side=48")
    assert all(40 <= b[2] - b[0] <= 48 for s in big["scene"] for b in [json.loads(s)["objects"][0]["box"]])
    with pytest.raises(ValueError, match=r"min_side <= max_side <= size \(32 px\), got 40 and 48"):
        load_image_text_dataset("shapes:num_samples=2,size=32,min_side=40,max_side=48")
    with pytest.raises(ValueError, match=r"kind must be one of .*single.*got 'crowd'"):
        load_image_text_dataset("shapes:num_samples=2,kind=crowd")
    with pytest.raises(ValueError, match="unknown key 'placement'"):
        load_image_text_dataset("shapes", params={"placement": True})
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_image_text_dataset(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no metadata.jsonl"):
        load_image_text_dataset(str(tmp_path / "empty"))


def test_samples_are_reproducible_per_seed_epoch_index():
    ds = load_image_text_dataset("shapes", params={"num_samples": 4, "size": 32})
    transform = ImageCaptionTransform(24, center_crop=False, random_flip=True)
    a, b = ImageCaptionDataset(ds, transform, seed=1), ImageCaptionDataset(ds, transform, seed=1)
    assert all(torch.equal(a[i]["pixel_values"], b[i]["pixel_values"]) for i in range(4))
    outs = []
    for epoch in range(6):
        a.set_epoch(epoch)
        outs.append(a[0]["pixel_values"])
    assert any(not torch.equal(outs[0], o) for o in outs[1:])


def test_skips_are_counted_across_dataloader_workers(imagefolder):
    ds = load_image_text_dataset(str(imagefolder), caption_column="caption")
    torch_ds = ImageCaptionDataset(ds, ImageCaptionTransform(16), caption_column="caption")
    loader = torch.utils.data.DataLoader(torch_ds, batch_size=2, num_workers=2, collate_fn=collate_skip_none)
    batches = list(loader)
    assert sum(b["skipped"] for b in batches) == 2 and sum(len(b["text"]) for b in batches) == 3
