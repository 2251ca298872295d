"""An auxiliary loss of the U-Net trainer for captions that state where one object lies from another
(`relation_words_weight`): a linear head on the text encoder's hidden states, the embeddings the U-Net's
cross-attention reads, must name the caption's relation (to the left of, to the right of, above, below) from
every token from the relation word to the end token. It needs the text encoder to train with the U-Net.

Why: trained from random weights with the U-Net, the default model's text encoder gave 'left' and 'right' (and
'above' and 'below') hidden states of cosine 0.999 / 0.994, and the tokens after them differed as little (0.955
at most), while its inputs told them apart (token embeddings of cosine 0.34 and 0.47). A U-Net cannot place
objects by words it is never shown apart, and it never learns to, so the diffusion loss alone does not pull the
words apart either: the position score stayed at chance through every recipe change. The head breaks that
loop from the text side, as a probe's loss would (Alain & Bengio 2016), at the cost of one linear layer that is
trained with the run and not exported. A causal text encoder cannot put the relation on the words before it,
so the tokens from the relation word on carry it: the U-Net finds the second object, and the relation, there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from latentforge.training.caption_words import caption_words

# the word of each relation phrase that tells it apart (shapes_grammar.RELATIONS), and its class
RELATION_WORDS = {"left": 0, "right": 1, "above": 2, "below": 3}
# a mirrored image swaps left and right (data.random_flip swaps the words of its caption alike)
MIRRORED = torch.tensor([1, 0, 2, 3])


def check_relation_words(config) -> None:
    """ValueError for `relation_words_weight` settings of the U-Net trainer that cannot work."""
    weight = config.relation_words_weight
    if weight < 0:
        raise ValueError(f"relation_words_weight must be >= 0 (0 = off), got {weight}")
    if weight and not config.train_text_encoder:
        raise ValueError(
            f"relation_words_weight={weight} trains the text encoder's hidden states: set "
            "train_text_encoder=true (full training), or relation_words_weight=0"
        )
    if weight and config.data.shards:
        raise ValueError(
            "relation_words_weight > 0 reads each cached caption's relation: it needs the latent cache "
            "(data.shards unset), or relation_words_weight=0"
        )


def relation_targets(captions: list[str], tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """For each caption: its relation class (N,) long (RELATION_WORDS; -1 when it names no relation or more than
    one) and the tokens that must name it (N, L) bool, from the relation word through the first end token
    (L = the tokenizer's length). ValueError if the tokenizer does not split captions at spaces."""
    length = tokenizer.model_max_length
    labels = torch.full((len(captions),), -1, dtype=torch.long)
    tokens = torch.zeros(len(captions), length, dtype=torch.bool)
    for row, caption in enumerate(caption_words(captions, tokenizer)):
        named = [i for i, word in enumerate(caption.words) if word in RELATION_WORDS]
        if len(named) != 1:
            continue
        end = caption.starts[-1]  # the first end token
        if end >= length or not caption.has_word_at(named[0]):
            raise ValueError(
                f"relation_words_weight: cannot find {caption.words[named[0]]!r} in the tokens of the caption "
                f"{captions[row]!r} (the tokenizer must split captions at spaces, and the caption must fit its "
                "length)"
            )
        labels[row] = RELATION_WORDS[caption.words[named[0]]]
        tokens[row, caption.starts[named[0]] : end + 1] = True
    return labels, tokens


def flip_relation_targets(labels: torch.Tensor, tokens: torch.Tensor, variants: int):
    """Per-row targets -> (N * variants) rows, as the latent cache holds each image and (with 2 variants) its
    mirror, whose caption says right for left: the label mirrored, the tokens the same ('left' and 'right' are
    one token each in CLIP's vocabulary)."""
    if variants == 1:
        return labels, tokens
    mirrored = torch.where(labels >= 0, MIRRORED[labels.clamp_min(0)], labels)
    return torch.stack([labels, mirrored], 1).flatten(), tokens.repeat_interleave(2, dim=0)


class RelationWordsLoss:
    """The loss's state in one run: every latent-cache row's targets (`relation_targets`) and the head, a
    linear layer from the text encoder's hidden size to the relations (trained with the run, not exported).
    Call `loss(rows, embeds, dropped, head)` with the caption embeddings the U-Net was given."""

    def __init__(self, hidden_size: int, labels: torch.Tensor, tokens: torch.Tensor) -> None:
        if not (labels >= 0).any():
            raise ValueError(
                "relation_words_weight > 0, but no training caption names a relation ('to the left of', 'to "
                "the right of', 'above', 'below'): set relation_words_weight=0 or train on data with them"
            )
        self.head = torch.nn.Linear(hidden_size, len(RELATION_WORDS))
        self.labels, self.tokens = labels, tokens

    def loss(
        self, rows: torch.Tensor, embeds: torch.Tensor, dropped: torch.Tensor, head=None
    ) -> torch.Tensor:
        """Mean cross-entropy of the head's relation at each token that must name it, over cache rows `rows`
        (B,) with caption embeddings `embeds` (B, L, D), leaving out the rows whose caption was `dropped` (B,);
        0 when no row of the batch names a relation. `head`: the head as the accelerator prepared it."""
        index = rows.to(self.labels.device)
        labels = self.labels[index].to(embeds.device)
        tokens = self.tokens[index].to(embeds.device) & ~dropped.to(embeds.device)[:, None]
        tokens &= (labels >= 0)[:, None]
        head = head or self.head
        if not tokens.any():  # zero, with the head in the graph (every process reaches the same backward)
            return head(embeds[:, 0]).sum() * 0
        logits = head(embeds[tokens])
        return F.cross_entropy(logits, labels[:, None].expand_as(tokens)[tokens])
