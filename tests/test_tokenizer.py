"""The offline CLIP tokenizer gives open_clip's ids, token for token, in both padding conventions."""

import itertools
import random

import open_clip
import pytest
import torch

from latentforge.models.tokenizer import (
    build_clip_tokenizer,
    clean_text,
    load_tokenizer,
    save_tokenizer,
    tokenizer_for,
)

HANDWRITTEN = [
    "",
    " ",
    "a",
    "A photo of a cat",
    "a red circle to the left of a blue square",
    "two yellow triangles on a green background",
    "masterpiece, best quality, (ultra detailed:1.2), [blurry], 8k uhd, dslr",
    "Hello, World!!! What's up? It's 5 o'clock; let's go...",
    "don't can't won't I'm you're we've they'll he'd",
    "e-mail: someone@example.com / https://example.com/path?q=1&x=2#frag",
    "C++ > C# >= Java <= Python != Rust == Go",
    "100% of 3.14159 is ~3, 1,000,000 items, 2nd place, 1st, #1, $99.99, €5, £3",
    "1234567890 0.5 -3 +7 1e-4 0x1F 2024-11-22 12:30:45",
    "naïve café résumé coöperate façade piñata jalapeño",
    "Ünïcödé ÆØÅ æøå ß ñ ç œ Ÿ",
    "Москва — столица России",
    "Ελληνικά γράμματα αβγδ",
    "日本語のテキスト、東京タワー",
    "中文提示词：一只猫在月光下",
    "한국어 프롬프트 고양이",
    "עברית שלום",
    "مرحبا بالعالم",
    "हिन्दी पाठ",
    "ไทย ภาษา",
    "🐱🐶🦊 emoji zoo 🎉🎈",
    "👍🏽 thumbs up: medium skin tone",
    "👩‍🚀 woman astronaut, 🏳️‍🌈 flag",
    "❤️ red heart ♥ ★ ☆ ✓ ✗ → ← ↑ ↓",
    "🍎 red apple, 🍏 green apple, 🍌",
    "tabs\tand\nnewlines\r\nand   many    spaces",
    "UPPER lower MiXeD CaSe",
    "under_score snake_case kebab-case CamelCase",
    "(((nested))) [[brackets]] {braces} <angles>",
    "!!!???...,,,;;;:::",
    "a photo of a dog   ",
    "    leading spaces",
    "‘single’",
    "quote \"double\" 'single' `back`",
    "x" * 300,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "a" + " b" * 200,
]

WORDS = [
    "a",
    "red",
    "blue",
    "green",
    "cat",
    "dog",
    "circle",
    "square",
    "star",
    "triangle",
    "above",
    "below",
    "left",
    "right",
    "of",
    "the",
    "on",
]
EXTRAS = ["!", "?", ",", "🙂", "42", "é", "日本", "ß", "🐶🐱", "3.5", "--", "'s", "(x:1.3)"]


def corpus() -> list[str]:
    """200+ strings: the hand-written ones, seeded random prompts, and prompts far past 77 tokens."""
    rng = random.Random(0)
    strings = list(HANDWRITTEN)
    for _ in range(170):
        n = rng.randint(1, 25)
        strings.append(" ".join(rng.choice(WORDS + EXTRAS) for _ in range(n)))
    for length in (80, 120, 200, 400):
        strings.append(" ".join(itertools.islice(itertools.cycle(WORDS + EXTRAS), length)))
    return strings


@pytest.fixture(scope="module")
def oc_tokenizer():
    return open_clip.SimpleTokenizer()


@pytest.fixture(scope="module")
def sd1():
    return tokenizer_for("sd1")


@pytest.fixture(scope="module")
def sd2():
    return tokenizer_for("sd2")


def test_corpus_is_large_and_has_long_prompts(oc_tokenizer):
    strings = corpus()
    assert len(strings) >= 200
    assert sum(len(oc_tokenizer.encode(s)) > 75 for s in strings) >= 5


def test_untruncated_ids_equal_open_clip(sd1, oc_tokenizer):
    # open_clip runs ftfy on every text; `clean_text` is that step, an identity for most strings.
    changed = 0
    for text in corpus():
        expected = [oc_tokenizer.sot_token_id, *oc_tokenizer.encode(text), oc_tokenizer.eot_token_id]
        assert sd1(clean_text(text)).input_ids == expected, text
        changed += clean_text(text) != text
    assert changed <= 8  # the corpus mostly tests the tokenizer itself, not ftfy


def test_77_token_ids_equal_open_clip_in_both_paddings(sd1, sd2):
    strings = corpus()
    reference = open_clip.tokenize(strings)  # truncates to 77 keeping <|endoftext|> last, pads with 0
    kwargs = dict(padding="max_length", truncation=True, max_length=77, return_tensors="pt")
    cleaned = [clean_text(s) for s in strings]
    ids_sd2 = sd2(cleaned, **kwargs).input_ids
    assert torch.equal(ids_sd2, reference)
    ids_sd1 = sd1(cleaned, **kwargs).input_ids
    expected_sd1 = reference.clone()
    after_eot = (reference == 49407).int().cumsum(dim=1) - (reference == 49407).int() > 0
    expected_sd1[after_eot] = 49407  # SD 1.x pads with <|endoftext|>; a "!" in the text stays id 0
    assert torch.equal(ids_sd1, expected_sd1)


def test_clean_text_covers_what_ftfy_and_html_change(sd1, oc_tokenizer):
    # open_clip's clean-up (ftfy + HTML unescape) changes these; transformers' tokenizer does not.
    for text in ["“curly” quotes", "ﬁne ligature", "ＦＵＬＬ width", "fish &amp; chips &lt;3"]:
        expected = [oc_tokenizer.sot_token_id, *oc_tokenizer.encode(text), oc_tokenizer.eot_token_id]
        assert sd1(text).input_ids != expected
        assert sd1(clean_text(text)).input_ids == expected


def test_save_and_load_round_trip(tmp_path, sd2):
    save_tokenizer(sd2, tmp_path / "tok")
    assert {"tokenizer.json", "vocab.json", "merges.txt"} <= {p.name for p in (tmp_path / "tok").iterdir()}
    loaded = load_tokenizer(tmp_path / "tok")
    text = "a green star on a pink background 🌟"
    kwargs = dict(padding="max_length", max_length=77)
    assert loaded(text, **kwargs).input_ids == sd2(text, **kwargs).input_ids
    assert loaded.pad_token == "!"


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="pad_token"):
        build_clip_tokenizer(pad_token="<pad>")
    with pytest.raises(ValueError, match="convention"):
        tokenizer_for("sdxl")
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load_tokenizer(tmp_path)


def test_training_captions_are_read_as_prompts_are_without_invisible_characters(sd1):
    from latentforge.models.tokenizer import tokenize

    plain = "a red circle to the left of a blue square"
    hidden = "a red\u200b circle\x00 to the\u202e left\x1b of a\tblue\ufeff square"
    assert torch.equal(tokenize(sd1, [hidden]), tokenize(sd1, [plain]))
    emoji = "a family \U0001f468\u200d\U0001f469\u200d\U0001f467"  # the joiner is part of the emoji: kept
    assert not torch.equal(tokenize(sd1, [emoji]), tokenize(sd1, [emoji.replace("\u200d", "")]))


def test_a_used_tokenizer_saves_the_same_files_as_a_fresh_one(tmp_path, sd1):
    from latentforge.models.tokenizer import tokenize

    fresh = tokenizer_for("sd1")
    save_tokenizer(fresh, tmp_path / "fresh")
    tokenize(fresh, ["a red circle"])  # leaves truncation and padding on the fast backend
    save_tokenizer(fresh, tmp_path / "used")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "fresh" / name).read_bytes() == (tmp_path / "used" / name).read_bytes(), name
    assert fresh.backend_tokenizer.truncation is not None  # the caller's tokenizer is left as it was
