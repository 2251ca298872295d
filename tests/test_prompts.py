"""Prompt encoding: A1111 emphasis syntax, 75-token chunks, clip_skip on both branches, diffusers equality."""

import copy

import pytest
import torch
from diffusers import StableDiffusionPipeline
from pipeline_helpers import (
    one_thread,  # noqa: F401  (autouse fixture)
    reference,
    tiny,
)

from latentforge.pipelines.prompts import encode_prompt, encode_texts, parse_prompt_weights, tokenize_chunks

W = 1.1


@pytest.fixture(scope="module")
def components():
    return tiny()


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a red circle", [("a red circle", 1.0)]),
        ("a (red:1.3) circle", [("a ", 1.0), ("red", 1.3), (" circle", 1.0)]),
        ("(a) [b] ((c))", [("a", W), (" ", 1.0), ("b", 1 / W), (" ", 1.0), ("c", W * W)]),
        ("((a:1.5) b)", [("a", 1.5 * W), (" b", W)]),
        (r"\(not weighted\) \[x\] a\\b", [(r"(not weighted) [x] a\b", 1.0)]),
        ("a (red:1.0) circle", [("a red circle", 1.0)]),
        ("x BREAK y", [("x", 1.0), (None, 1.0), ("y", 1.0)]),
        ("a (b", [("a ", 1.0), ("b", W)]),  # an unclosed bracket runs to the end, as in A1111
        ("a ) b ] c: d", [("a ) b ] c: d", 1.0)]),  # unmatched closers and colons are text
        ("", [("", 1.0)]),
    ],
)
def test_parse_prompt_weights(prompt, expected):
    parsed = [(f.text, f.weight) for f in parse_prompt_weights(prompt)]
    assert [t for t, _ in parsed] == [t for t, _ in expected]
    assert [w for _, w in parsed] == pytest.approx([w for _, w in expected])


def test_plain_prompts_equal_diffusers_exactly(components):
    pipe = reference(StableDiffusionPipeline, components)
    prompts = ["a red circle", "two blue squares on a white background"]
    with torch.no_grad():
        theirs = pipe.encode_prompt(prompts, "cpu", 1, True, negative_prompt=["ugly", "blurry"])
        ours = encode_prompt(components.tokenizer, components.text_encoder, prompts, ["ugly", "blurry"])
        theirs_empty = pipe.encode_prompt("a red circle", "cpu", 1, True)[1]
        ours_empty = encode_prompt(components.tokenizer, components.text_encoder, "a red circle")[1]
    assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])
    assert torch.equal(ours_empty, theirs_empty)  # the unconditional branch is the empty prompt ""


def test_weight_one_equals_the_plain_prompt(components):
    with torch.no_grad():
        plain = encode_texts(components.tokenizer, components.text_encoder, ["a red circle"])
        weighted = encode_texts(components.tokenizer, components.text_encoder, ["a (red:1.0) circle"])
        emphasized = encode_texts(components.tokenizer, components.text_encoder, ["a (red:1.5) circle"])
    assert torch.equal(plain, weighted)
    red = 2  # <bos> a red
    torch.testing.assert_close(emphasized[0, red], 1.5 * plain[0, red])
    torch.testing.assert_close(emphasized[0, red + 1 :], plain[0, red + 1 :])


def test_emphasis_keeps_the_chunk_mean_when_it_is_well_conditioned(components):
    """A1111's "Original" emphasis; a random text encoder's mean is ~0 (no layer-norm bias), so give it one."""
    encoder = copy.deepcopy(components.text_encoder)
    with torch.no_grad():
        encoder.final_layer_norm.bias.fill_(0.3)
        plain = encode_texts(components.tokenizer, encoder, ["a red circle"])
        emphasized = encode_texts(components.tokenizer, encoder, ["a (red:1.5) circle"])
    assert emphasized.mean().item() == pytest.approx(plain.mean().item(), rel=1e-5)
    ratio = emphasized[0, 2] / plain[0, 2]
    assert 1.3 < ratio.mean().item() < 1.5  # the weight, rescaled a little to restore the mean


def test_a_150_token_prompt_is_not_truncated(components):
    tokenizer, encoder = components.tokenizer, components.text_encoder
    words = [f"word{i}" for i in range(75)]
    prompt = " ".join(words)
    tokens = len(tokenizer(prompt, add_special_tokens=False).input_ids)
    assert tokens >= 150
    changed_tail = " ".join(words[:-1] + ["circle"])
    with torch.no_grad():
        long = encode_texts(tokenizer, encoder, [prompt])
        tail = encode_texts(tokenizer, encoder, [changed_tail])
    assert long.shape == (1, 77 * -(-tokens // 75), encoder.config.hidden_size)
    assert torch.equal(long[:, :77], tail[:, :77])  # the first chunk does not see the tail
    assert not torch.allclose(long[:, -77:], tail[:, -77:])  # the last word reaches the embedding


def test_chunks_are_75_tokens_framed_and_padded(components):
    tokenizer = components.tokenizer
    chunks = tokenize_chunks(tokenizer, " ".join(["cat"] * 80) + " BREAK dog")
    assert len(chunks) == 3
    for ids, weights in chunks:
        assert len(ids) == len(weights) == 77
        assert ids[0] == tokenizer.bos_token_id
    assert chunks[0][0][1:76] == [tokenizer.convert_tokens_to_ids("cat</w>")] * 75
    assert chunks[1][0][:7] == [tokenizer.bos_token_id] + [chunks[0][0][1]] * 5 + [tokenizer.eos_token_id]
    assert chunks[2][0][1] == tokenizer.convert_tokens_to_ids("dog</w>")


def test_negative_prompt_longer_than_prompt_pads_the_prompt(components):
    with torch.no_grad():
        cond, uncond = encode_prompt(
            components.tokenizer, components.text_encoder, "a red circle", " ".join(["ugly"] * 100)
        )
        short = encode_texts(components.tokenizer, components.text_encoder, ["a red circle"])
        empty = encode_texts(components.tokenizer, components.text_encoder, [""])
    assert cond.shape == uncond.shape == (1, 154, 32)
    assert torch.equal(cond[:, :77], short)
    assert torch.allclose(cond[:, 77:], empty, atol=1e-6)


def test_clip_skip_applies_to_prompt_and_negative(components):
    tokenizer, encoder = components.tokenizer, components.text_encoder
    with torch.no_grad():
        cond, uncond = encode_prompt(tokenizer, encoder, "a red circle", "blue", clip_skip=2)
        ids = tokenizer(
            ["a red circle", "blue"], padding="max_length", max_length=77, return_tensors="pt"
        ).input_ids
        hidden = encoder(ids, output_hidden_states=True).hidden_states[-3]
        expected = encoder.final_layer_norm(hidden)
        no_skip = encode_prompt(tokenizer, encoder, "a red circle", "blue")
    torch.testing.assert_close(cond, expected[:1], atol=1e-6, rtol=0)
    torch.testing.assert_close(uncond, expected[1:], atol=1e-6, rtol=0)
    assert not torch.allclose(uncond, no_skip[1])


def test_negative_prompt_count_must_match(components):
    with pytest.raises(ValueError, match="negative_prompt: got 1 negative prompts for 2 prompts"):
        encode_prompt(components.tokenizer, components.text_encoder, ["a", "b"], ["c"])
