"""The U-Net trainer's token-grounding loss (`token_grounding_weight`): the phrases' tokens and cells from the
scenes, the kept cross-attention (the U-Net's output unchanged), the loss's value, and a run that trains."""

import json

import pytest
import torch
from scene_loss_helpers import assert_refused_before_work, train_weights

from latentforge.models.components import Components
from latentforge.training.token_grounding import GROUPS, TokenGroundingLoss, phrase_targets

GROUNDING = [
    "data.random_flip=false",
    "token_grounding_weight=1",
    "optim.max_steps=4",
    "checkpoint.keep_last=0",
]


def _scene(*objects: tuple[str, str, tuple[int, int, int, int]], size: int = 16) -> str:
    items = [{"shape": shape, "color": color, "box": list(box)} for shape, color, box in objects]
    return json.dumps({"objects": items, "background": "white", "size": size})


@pytest.fixture(scope="module")
def tiny():
    return Components.from_architecture("tiny", seed=0)


def test_each_phrase_gets_its_words_tokens_and_its_objects_cells(tiny):
    tokenizer = tiny.tokenizer
    scenes = [
        _scene(
            ("triangle", "red", (0, 0, 8, 8)),
            ("triangle", "red", (8, 8, 16, 16)),
            ("star", "blue", (8, 0, 16, 8)),
        ),
        _scene(("circle", "green", (4, 4, 12, 12))),
    ]
    captions = ["two red triangles and a blue star on a white background", "a green circle"]
    masks, tokens = phrase_targets(scenes, captions, tokenizer, (4, 4))
    assert masks.shape == (2, GROUPS, 4, 4) and tokens.shape == (2, GROUPS, tokenizer.model_max_length)
    ids = tokenizer(captions[0]).input_ids
    words = [tokenizer.decode([ids[i]]).strip() for i in tokens[0, 0].nonzero()[:, 0]]
    assert "".join(words) == "redtriangles"  # "triangles" may be two tokens: both are supervised
    assert [tokenizer.decode([ids[i]]).strip() for i in tokens[0, 1].nonzero()[:, 0]] == ["blue", "star"]
    # the two red triangles' cells (top left, bottom right), the star's (top right), "white" names no object
    assert masks[0, 0, :2, :2].all() and masks[0, 0, 2:, 2:].all() and not masks[0, 0, :2, 2:].any()
    assert masks[0, 1, :2, 2:].any() and not masks[0, 1, 2:].any() and not masks[0, 1, :, :2].any()
    assert tokens[1, 0].sum() == 2 and not tokens[1, 1].any() and not masks[1, 1].any()
    assert masks[1, 0, 1:3, 1:3].all() and not masks[1, 0, 0].any()


def test_the_kept_attention_is_the_softmax_and_leaves_the_output_unchanged(tiny):
    unet = Components.from_architecture("tiny", seed=0).unet
    size, width = unet.config.sample_size, unet.config.cross_attention_dim
    sample, text = torch.randn(2, unet.config.in_channels, size, size), torch.randn(2, 5, width)
    t = torch.tensor([10, 500])
    with torch.no_grad():
        before = unet(sample, t, text).sample
    masks = torch.zeros(2, GROUPS, size, size, dtype=torch.bool)
    grounding = TokenGroundingLoss(unet, "up_blocks", masks, torch.zeros(2, GROUPS, 5, dtype=torch.bool))
    assert grounding.modules and all(
        m.processor.__class__.__name__ == "_KeepAttention" for m in grounding.modules
    )
    attn = grounding.modules[0]
    seen = {}
    attn.register_forward_pre_hook(lambda m, args, kwargs: seen.update(x=args[0]), with_kwargs=True)
    after = unet(sample, t, text).sample
    assert torch.allclose(before, after, atol=1e-5)
    assert len(grounding._kept) == len(grounding.modules)
    x = seen["x"]
    query = attn.to_q(x).unflatten(-1, (attn.heads, -1)).transpose(1, 2)
    key = attn.to_k(text).unflatten(-1, (attn.heads, -1)).transpose(1, 2)
    expected = torch.softmax(query @ key.transpose(-1, -2) * attn.scale, dim=-1).mean(1)
    assert torch.allclose(grounding._kept[0], expected, atol=1e-5)
    with torch.no_grad():  # sampling keeps nothing
        grounding._kept.clear()
        unet(sample, t, text)
    assert not grounding._kept
    with pytest.raises(ValueError, match="token_grounding_layers='down_blocks.9' holds no cross-attention"):
        TokenGroundingLoss(unet, "down_blocks.9", masks, masks)


def test_the_loss_is_one_minus_the_share_inside_squared_over_the_phrases_words(tiny):
    unet = Components.from_architecture("tiny", seed=0).unet
    masks = torch.zeros(2, GROUPS, 4, 4, dtype=torch.bool)
    masks[:, 0, :, :2] = True  # the left half
    tokens = torch.zeros(2, GROUPS, 3, dtype=torch.bool)
    tokens[:, 0, 1] = True
    grounding = TokenGroundingLoss(unet, "up_blocks.0", masks, tokens)
    probs = torch.full((2, 16, 3), 1 / 3)  # every cell attends to the three tokens alike: share 1/2 -> 0.25
    grounding._kept[:] = [probs] * len(grounding.modules)
    loss = grounding.loss(torch.tensor([0, 1]), torch.tensor([False, False]))
    assert loss.item() == pytest.approx(0.25)
    left = torch.zeros(2, 4, 4, 3)
    left[..., :2, :] = 1 / 3  # token 1's attention all on the left half, as asked, for row 0
    probs = torch.stack([left.reshape(2, 16, 3)[0], probs[1]])
    grounding._kept[:] = [probs] * len(grounding.modules)
    assert grounding.loss(torch.tensor([0, 1]), torch.tensor([False, False])).item() == pytest.approx(0.125)
    grounding._kept[:] = [probs] * len(grounding.modules)
    assert grounding.loss(torch.tensor([0, 1]), torch.tensor([False, True])).item() == pytest.approx(0.0)
    # an 8x8 layer reads the cells at its own size: the left half still
    grounding._kept[:] = [torch.full((2, 64, 3), 1 / 3)] * len(grounding.modules)
    assert grounding.loss(torch.tensor([0, 1]), torch.tensor([True, False])).item() == pytest.approx(0.25)
    with pytest.raises(RuntimeError, match="has not run since the last loss"):
        grounding.loss(torch.tensor([0]), torch.tensor([False]))


@pytest.mark.parametrize("bad", ["token_grounding_weight=-1", "token_grounding_weight=1 data.buckets=true"])
def test_settings_the_loss_cannot_use_are_refused_before_any_work(tmp_path, bad):
    assert_refused_before_work(tmp_path, "token_grounding_weight", *bad.split())


def test_a_run_with_the_loss_trains_the_cross_attention_and_exports_a_plain_unet(tmp_path):
    grounded = train_weights(tmp_path / "grounded", *GROUNDING)
    without = train_weights(tmp_path / "without", *GROUNDING, "token_grounding_weight=0")
    assert set(grounded) == set(without)
    worst = max((grounded[k] - without[k]).abs().max().item() for k in grounded if "attn2.to_k" in k)
    assert worst > 1e-4, "the loss did not reach the cross-attention"


def test_with_relation_the_relation_word_grounds_on_the_first_object(tiny, tmp_path):
    tokenizer = tiny.tokenizer
    scene = _scene(("circle", "red", (0, 0, 8, 8)), ("star", "blue", (8, 8, 16, 16)))
    captions = ["a red circle above a blue star", "a red circle and a blue star"]
    plain = phrase_targets([scene] * 2, captions, tokenizer, (4, 4))[1]
    masks, tokens = phrase_targets([scene] * 2, captions, tokenizer, (4, 4), relation=True)
    ids = tokenizer(captions[0]).input_ids
    first = [tokenizer.decode([ids[i]]).strip() for i in tokens[0, 0].nonzero()[:, 0]]
    assert first == ["red", "circle", "above"]
    assert torch.equal(tokens[0, 1], plain[0, 1]) and torch.equal(tokens[1], plain[1])  # nothing else moves
    assert masks[0, 0, :2, :2].all() and not masks[0, 0, 2:].any()  # "above" grounds on the circle's cells
    assert_refused_before_work(tmp_path, "token_grounding_relation=true", "token_grounding_relation=true")
