"""The U-Net trainer's relation-words loss (`relation_words_weight`): each caption's relation and the tokens that
must name it, their mirror for flipped images, the loss's value, that it pulls 'left' and 'right' apart in a
text encoder, refusals, and a run that trains the text encoder with it."""

import math

import pytest
import torch
from safetensors.torch import load_file
from scene_loss_helpers import assert_refused_before_work, train_weights

from latentforge.models.components import Components
from latentforge.training import unet as unet_trainer
from latentforge.training import unet_data
from latentforge.training.relation_words import (
    RELATION_WORDS,
    RelationWordsLoss,
    flip_relation_targets,
    relation_targets,
)

RELATIONS = [
    "data.dataset=shapes:kind=pair,num_samples=24",
    "train_text_encoder=true",
    "relation_words_weight=1",
]
CAPTIONS = [
    "a red circle to the left of a blue square on a gray background",
    "a red circle and a blue star",
    "an orange star below two green circles",  # not in the grammar (a relation joins single objects), but read
    "two red circles",
]


@pytest.fixture(scope="module")
def tiny():
    return Components.from_architecture("tiny", seed=0)


def test_each_caption_gets_its_relation_and_the_tokens_from_the_relation_word_to_the_end_token(tiny):
    tokenizer = tiny.tokenizer
    labels, tokens = relation_targets(CAPTIONS, tokenizer)
    assert labels.tolist() == [RELATION_WORDS["left"], -1, RELATION_WORDS["below"], -1]
    assert not tokens[1].any() and not tokens[3].any()
    for row, word in ((0, "left"), (2, "below")):
        ids = tokenizer(CAPTIONS[row], padding="max_length", max_length=tokenizer.model_max_length).input_ids
        picked = [i for i, on in zip(ids, tokens[row].tolist(), strict=True) if on]
        assert picked[0] == tokenizer(word, add_special_tokens=False).input_ids[0]
        assert picked[-1] == tokenizer.eos_token_id and picked.count(tokenizer.eos_token_id) == 1
        end = ids.index(tokenizer.eos_token_id)
        assert (
            tokens[row].nonzero()[-1].item() == end
            and tokens[row].sum().item() == end - ids.index(picked[0]) + 1
        )


def test_a_mirrored_image_swaps_left_and_right_only():
    labels = torch.tensor([0, 1, 2, 3, -1])
    tokens = torch.eye(5, dtype=torch.bool)
    flipped, flipped_tokens = flip_relation_targets(labels, tokens, 2)
    assert flipped.tolist() == [0, 1, 1, 0, 2, 2, 3, 3, -1, -1]
    assert torch.equal(flipped_tokens[::2], tokens) and torch.equal(flipped_tokens[1::2], tokens)
    assert flip_relation_targets(labels, tokens, 1)[0] is labels


def test_the_loss_is_the_cross_entropy_over_the_marked_tokens_of_kept_captions():
    labels = torch.tensor([0, 3, -1])
    tokens = torch.zeros(3, 4, dtype=torch.bool)
    tokens[0, 1:3] = tokens[1, 2:] = tokens[2, :] = True
    loss = RelationWordsLoss(2, labels, tokens)
    torch.nn.init.zeros_(loss.head.weight)
    with torch.no_grad():
        loss.head.bias.copy_(torch.tensor([0.0, 0.0, 0.0, math.log(3.0)]))
    embeds = torch.randn(3, 4, 2)
    # all rows kept: two tokens of class 0 (probability 1/6), two of class 3 (probability 1/2)
    expected = (2 * math.log(6) + 2 * math.log(2)) / 4
    value = loss.loss(torch.tensor([0, 1, 2]), embeds, torch.tensor([False, False, False]))
    assert value.item() == pytest.approx(expected)
    # the second caption dropped for guidance: only the first's tokens count
    dropped = loss.loss(torch.tensor([0, 1, 2]), embeds, torch.tensor([False, True, False]))
    assert dropped.item() == pytest.approx(math.log(6))
    # a batch with no relation: zero, and the head still in the graph
    none = loss.loss(torch.tensor([2]), embeds[:1], torch.tensor([False]))
    assert none.item() == 0 and none.requires_grad
    with pytest.raises(ValueError, match="no training caption names a relation"):
        RelationWordsLoss(2, torch.tensor([-1]), tokens[:1])


def test_the_loss_alone_pulls_left_and_right_apart_in_the_text_encoder(tiny):
    torch.manual_seed(0)
    text_encoder, tokenizer = tiny.text_encoder, tiny.tokenizer
    captions = [
        f"a {color} {shape} {relation} a {other} star"
        for color, other in (("red", "blue"), ("green", "pink"))
        for shape in ("circle", "square")
        for relation in ("to the left of", "to the right of", "above", "below")
    ]
    labels, tokens = relation_targets(captions, tokenizer)
    ids = tokenizer(
        captions, padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt"
    )
    loss = RelationWordsLoss(text_encoder.config.hidden_size, labels, tokens)
    params = [*text_encoder.parameters(), *loss.head.parameters()]
    optimizer = torch.optim.Adam(params, lr=3e-3)

    def spread() -> float:  # 1 - cosine of the hidden states after 'left' and after 'right', averaged
        with torch.no_grad():
            hidden = text_encoder(ids.input_ids)[0]
        # "to the left of" and "to the right of" captions mark as many tokens, pair by pair
        left = hidden[tokens & (labels == 0)[:, None]]
        right = hidden[tokens & (labels == 1)[:, None]]
        return 1 - torch.cosine_similarity(left, right, dim=-1).mean().item()

    rows, kept = torch.arange(len(captions)), torch.zeros(len(captions), dtype=torch.bool)
    before = spread()
    first = None
    for _ in range(30):
        value = loss.loss(rows, text_encoder(ids.input_ids)[0], kept)
        first = value.item() if first is None else first
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    assert value.item() < 0.2 * first
    assert spread() > 2 * before + 0.05


@pytest.mark.parametrize(
    "bad, match",
    [
        ("relation_words_weight=-1", "relation_words_weight must be >= 0"),
        ("relation_words_weight=1", "set train_text_encoder=true"),
    ],
)
def test_settings_the_loss_cannot_use_are_refused_before_any_work(tmp_path, bad, match):
    assert_refused_before_work(tmp_path, match, *bad.split())


def test_a_run_with_the_loss_trains_the_text_encoder_on_flipped_captions_and_exports_it(
    tmp_path, monkeypatch
):
    seen = {}
    cached_data = unet_data.cached_data
    monkeypatch.setattr(unet_trainer, "cached_data", lambda *a: seen.setdefault("data", cached_data(*a)))
    values, grads = [], []
    loss = RelationWordsLoss.loss

    def keep(self, rows, embeds, *args):  # the value, and its gradient on the embeddings the U-Net was given
        values.append(loss(self, rows, embeds, *args))
        grads.append(torch.autograd.grad(values[-1], embeds, retain_graph=True)[0])
        return values[-1]

    monkeypatch.setattr(RelationWordsLoss, "loss", keep)
    train_weights(tmp_path / "relations", *RELATIONS)

    data = seen["data"]
    assert data.flip_variants == 2  # the smoke config flips
    labels, tokens = data.relation_targets
    assert len(labels) == len(tokens) == 2 * len(labels[::2]) and (labels >= 0).any()
    mirrored = {0: 1, 1: 0, 2: 2, 3: 3, -1: -1}
    assert [mirrored[v] for v in labels[::2].tolist()] == labels[1::2].tolist()
    assert len(values) == 4 and all(torch.isfinite(v) and v > 0 for v in values)
    assert all(g.abs().sum() > 0 for g in grads), "the loss must reach the text encoder's output"
    exported = load_file(tmp_path / "relations" / "model" / "text_encoder" / "model.safetensors")
    assert not any("head" in name or name.startswith("weight") for name in exported)  # the head stays out
