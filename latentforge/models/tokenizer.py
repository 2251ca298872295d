"""An offline CLIP tokenizer: transformers' `CLIPTokenizer` built from the BPE merges inside open_clip.

open_clip ships OpenAI CLIP's byte-pair merges (`bpe_simple_vocab_16e6.txt.gz`). The CLIP vocabulary is
a pure function of those merges (256 byte symbols, the same with `</w>`, one entry per merge, then the
two special tokens), so `vocab.json` and `merges.txt` can be written without the network and give the
same ids as open_clip's tokenizer, token for token.

Padding conventions: Stable Diffusion 1.x pads with `<|endoftext|>` (id 49407), 2.x (OpenCLIP) pads
with `!` (id 0, which is what open_clip's zero padding decodes to).
"""

from __future__ import annotations

import copy
import gzip
import html
import json
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Literal

import torch
from transformers import CLIPTokenizer

CONTEXT_LENGTH = 77
MERGES_USED = 49152 - 256 - 2  # open_clip/OpenAI CLIP use the first 48894 merges of the file
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
PAD_TOKENS = {"sd1": EOS, "sd2": "!"}


def _bpe_path() -> Path:
    import open_clip.tokenizer  # light: pulls in ftfy and regex only

    return Path(open_clip.tokenizer.default_bpe())


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode map (printable bytes map to themselves)."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes)))


@lru_cache(maxsize=1)
def clip_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """The CLIP `vocab` (token -> id, 49408 entries) and merge rules, derived from open_clip's BPE file."""
    with gzip.open(_bpe_path()) as file:
        lines = file.read().decode("utf-8").split("\n")
    merges = lines[1 : MERGES_USED + 1]
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges] + [BOS, EOS]
    return {token: i for i, token in enumerate(tokens)}, merges


def build_clip_tokenizer(pad_token: str = EOS, model_max_length: int = CONTEXT_LENGTH) -> CLIPTokenizer:
    """A `CLIPTokenizer` equal to open_clip's; `pad_token` is `<|endoftext|>` (SD 1.x) or `!` (SD 2.x)."""
    if pad_token not in (EOS, "!"):
        raise ValueError(f"pad_token must be {EOS!r} (SD 1.x) or '!' (SD 2.x), got {pad_token!r}")
    vocab, merges = clip_vocab_and_merges()
    return CLIPTokenizer(
        vocab=dict(vocab),
        merges=[tuple(m.split()) for m in merges],
        pad_token=pad_token,
        model_max_length=model_max_length,
        # open_clip reads "!" and "<|endoftext|>" inside a prompt as plain text; so do we (SD 2.x pads with "!").
        split_special_tokens=True,
    )


def tokenizer_for(convention: Literal["sd1", "sd2"]) -> CLIPTokenizer:
    """The tokenizer of a padding convention: "sd1" pads with `<|endoftext|>`, "sd2" with `!`."""
    if convention not in PAD_TOKENS:
        raise ValueError(f"convention must be one of {sorted(PAD_TOKENS)}, got {convention!r}")
    return build_clip_tokenizer(PAD_TOKENS[convention])


def save_tokenizer(tokenizer: CLIPTokenizer, path: str | Path) -> None:
    """Save `tokenizer` with `tokenizer.json` and also the classic `vocab.json` + `merges.txt`, which older
    transformers releases (and other tools) read. A copy is saved without the truncation and padding that
    calling the tokenizer leaves on its fast backend, so the same tokenizer always saves the same files."""
    path = Path(path)
    clean = copy.deepcopy(tokenizer)
    clean.backend_tokenizer.no_truncation()
    clean.backend_tokenizer.no_padding()
    clean.save_pretrained(str(path))
    vocab, merges = clip_vocab_and_merges()
    if len(tokenizer) == len(vocab):
        (path / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
        (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


def load_tokenizer(path: str | Path) -> CLIPTokenizer:
    """Load a saved CLIP tokenizer folder (`tokenizer.json`, or `vocab.json` + `merges.txt`)."""
    path = Path(path)
    if not (path / "tokenizer.json").is_file() and not (path / "vocab.json").is_file():
        raise FileNotFoundError(
            f"tokenizer: neither {path / 'tokenizer.json'} nor {path / 'vocab.json'} exists; "
            "save one with latentforge.models.tokenizer.save_tokenizer(build_clip_tokenizer(), path)"
        )
    try:
        return CLIPTokenizer.from_pretrained(str(path))
    except Exception as err:  # tokenizers raises its own exception types for corrupt JSON
        raise ValueError(
            f"tokenizer: the files in {path} could not be read ({err}); re-save the tokenizer"
        ) from err


def clean_text(text: str) -> str:
    """open_clip's text clean-up (ftfy, HTML unescape): makes transformers' ids equal open_clip's also for
    typographic quotes, ligatures, full-width forms and HTML entities, which transformers' fast CLIP
    tokenizer does not normalise."""
    import ftfy

    return html.unescape(html.unescape(ftfy.fix_text(text))).strip()


def tokenize(tokenizer: CLIPTokenizer, texts: list[str]) -> torch.Tensor:
    """Token ids (N, L) as diffusers' pipelines make them: padded to the maximum length, truncated; of the
    visible text (`visible_text`), as the pipelines read prompts, so training captions and prompts agree."""
    texts = [visible_text(text) for text in texts]
    ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True)
    return torch.tensor(ids.input_ids, dtype=torch.long)


def visible_text(prompt: str) -> str:
    """`prompt` without the characters nobody sees: control codes (NUL, terminal escapes; tabs and line breaks
    become spaces) and format marks (zero-width space, BOM, bidi overrides; the emoji joiner U+200D stays).
    CLIP's tokenizer would turn each into byte tokens that change the image."""
    kept = (" " if c in "\t\n\r" else c for c in prompt if c in "\t\n\r\u200d" or _visible(c))
    return "".join(kept)


def _visible(char: str) -> bool:
    return unicodedata.category(char) not in ("Cc", "Cf")
