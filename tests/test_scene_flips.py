"""The scene losses (shape map, token grounding) with data.random_flip: each image's targets mirror with it,
the flipped caption's words are found again, and the train step reads the targets of the variant it trains."""

import torch
from scene_loss_helpers import train_weights

from latentforge.data.transforms import swap_left_right
from latentforge.models.components import Components
from latentforge.training import latent_cache, unet_data
from latentforge.training import unet as unet_trainer
from latentforge.training.shape_maps import ShapeMapLoss
from latentforge.training.token_grounding import TokenGroundingLoss, phrase_targets
from latentforge.training.unet_data import flip_variants

FLIPPED = [
    "data.random_flip=true",
    "shape_map_weight=0.5",
    "token_grounding_weight=1",
    "optim.max_steps=4",
    "checkpoint.keep_last=0",
]


def test_flip_variants_put_each_rows_mirror_after_it():
    maps = torch.arange(2 * 3 * 2 * 4).reshape(2, 3, 2, 4)
    assert flip_variants(maps, 1) is maps
    both = flip_variants(maps, 2)
    assert both.shape == (4, 3, 2, 4)
    assert torch.equal(both[0], maps[0]) and torch.equal(both[2], maps[1])
    assert torch.equal(both[1], maps[0].flip(-1)) and torch.equal(both[3], maps[1].flip(-1))
    assert both[1, 0, 0].tolist() == [3, 2, 1, 0]


def test_sample_inputs_takes_the_variant_it_is_given():
    class Cache:  # one bucket of 3 rows, 2 variants, no spread: the latents are the chosen variant's mean
        mean = [torch.randn(3, 2, 4, 2, 2)]
        std = [torch.zeros(3, 2, 4, 2, 2)]
        bucket, slot = torch.zeros(3, dtype=torch.long), torch.arange(3)
        text_index = torch.tensor([[1, 2], [3, 4], [5, 6]])
        embeds, pixels = torch.arange(7.0)[:, None, None], None

    rows, variant = torch.tensor([0, 2]), torch.tensor([1, 0])
    latents, embeds, _ = latent_cache.sample_inputs(Cache, rows, 2.0, 0.0, variant=variant)
    assert torch.equal(latents, torch.stack([Cache.mean[0][0, 1], Cache.mean[0][2, 0]]) * 2.0)
    assert embeds.flatten().tolist() == [2.0, 5.0]  # each row's caption of that variant


def test_a_flipped_run_reads_the_targets_of_the_variant_it_trains(tmp_path, monkeypatch):
    seen = {"variants": [], "shape_keys": [], "grounding_keys": [], "rows": []}
    cached_data, sample_inputs = unet_data.cached_data, unet_data.sample_inputs

    def keep_data(*args):
        seen["data"] = cached_data(*args)
        return seen["data"]

    def keep_variant(cache, rows, *args):
        seen["rows"].append(rows.clone())
        seen["variants"].append(args[-1].clone())
        return sample_inputs(cache, rows, *args)

    shape_loss, grounding_loss = ShapeMapLoss.loss, TokenGroundingLoss.loss
    monkeypatch.setattr(unet_trainer, "cached_data", keep_data)
    monkeypatch.setattr(unet_data, "sample_inputs", keep_variant)
    monkeypatch.setattr(
        ShapeMapLoss,
        "loss",
        lambda self, keys, *a: seen["shape_keys"].append(keys) or shape_loss(self, keys, *a),
    )
    monkeypatch.setattr(
        TokenGroundingLoss,
        "loss",
        lambda self, keys, *a: seen["grounding_keys"].append(keys) or grounding_loss(self, keys, *a),
    )
    weights = train_weights(tmp_path / "flipped", *FLIPPED)
    assert all(torch.isfinite(w).all() for w in weights.values())

    data = seen["data"]
    assert data.flip_variants == 2
    n = len(data.shape_targets) // 2
    assert torch.equal(data.shape_targets[1::2], data.shape_targets[::2].flip(-1))
    masks, tokens = data.phrase_targets
    assert len(masks) == len(tokens) == 2 * n and torch.equal(masks[1::2], masks[::2].flip(-1))
    assert masks.any() and tokens.any()
    # each step's scene targets are those of the cache rows and flip variants its latents came from
    variants = torch.cat(seen["variants"])
    assert set(variants.tolist()) == {0, 1}, "4 steps of 4 images drew one variant only"
    expected = [r * 2 + v for r, v in zip(seen["rows"], seen["variants"], strict=True)]
    for keys in (seen["shape_keys"], seen["grounding_keys"]):
        assert len(keys) == len(expected)
        assert all(torch.equal(k, e) for k, e in zip(keys, expected, strict=True))


def test_a_flipped_caption_grounds_the_same_words():
    tokenizer = Components.from_architecture("tiny", seed=0).tokenizer
    scene = '{"objects": [{"shape": "circle", "color": "red", "box": [0, 0, 8, 8]}, '
    scene += '{"shape": "star", "color": "blue", "box": [8, 8, 16, 16]}], "background": "white", "size": 16}'
    caption = "a red circle to the left of a blue star"
    masks, tokens = phrase_targets([scene], [caption], tokenizer, (4, 4))
    _, swapped = phrase_targets([scene], [swap_left_right(caption)], tokenizer, (4, 4))
    ids = [tokenizer(caption).input_ids, tokenizer(swap_left_right(caption)).input_ids]
    for group in range(2):
        words = [
            [tokenizer.decode([ids[v][i]]).strip() for i in t[0, group].nonzero()[:, 0]]
            for v, t in enumerate((tokens, swapped))
        ]
        assert words[0] == words[1] == [["red", "circle"], ["blue", "star"]][group]
