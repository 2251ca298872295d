"""Where each word of a caption lies among its CLIP tokens, for the losses that supervise words (token grounding,
relation words)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class CaptionWords(NamedTuple):
    """One caption: its padded token ids (the tokenizer's length), its words (split at spaces), the index of each
    word's first token (`starts[len(words)]` is the first end token) and each word's first token id."""

    ids: list[int]
    words: list[str]
    starts: list[int]
    first_ids: list[int]

    def has_word_at(self, i: int) -> bool:
        """Whether word i's tokens start where `starts` says (False when the caption is cut off or the tokenizer
        does not split captions at spaces)."""
        start = self.starts[i]
        return start < len(self.ids) and self.ids[start] == self.first_ids[i]


def caption_words(captions: list[str], tokenizer) -> list[CaptionWords]:
    """`CaptionWords` of each caption; each distinct word tokenized once."""
    length = tokenizer.model_max_length
    ids = tokenizer(captions, padding="max_length", max_length=length, truncation=True).input_ids
    pieces: dict[str, list[int]] = {}
    found = []
    for row, caption in enumerate(captions):
        words = caption.split(" ")
        for word in words:
            if word not in pieces:
                pieces[word] = tokenizer(word, add_special_tokens=False).input_ids
        starts = np.cumsum([1] + [len(pieces[w]) for w in words]).tolist()  # after the start token
        found.append(CaptionWords(ids[row], words, starts, [pieces[w][0] for w in words]))
    return found
