"""Prompt text -> CLIP token embeddings, with AUTOMATIC1111's emphasis syntax and long-prompt chunking.

Syntax (as in A1111's `prompt_parser.py` and ComfyUI): `(text)` multiplies the weight of `text` by 1.1,
`[text]` divides it by 1.1, `(text:1.3)` sets a factor of 1.3; brackets nest and multiply; `\\(`, `\\)`,
`\\[`, `\\]` and `\\\\` are literal characters; `BREAK` starts a new 75-token chunk.

Long prompts: the tokens are cut into chunks of `model_max_length - 2` (75 for CLIP), each chunk is
encoded on its own as `<bos> tokens <eos> <pad>...` and the chunk embeddings are concatenated along the
sequence, so nothing is truncated. A prompt of at most 75 tokens without emphasis is encoded exactly as
diffusers' `StableDiffusionPipeline.encode_prompt` encodes it.

Emphasis follows A1111's default ("Original") mode: each token embedding is multiplied by its weight and the
chunk is rescaled to its original mean, so weights shift attention without changing the overall scale. The
rescale divides by the new mean, so it is skipped (A1111's "No norm" mode) for a chunk whose mean is under
1% of its mean absolute value: a text encoder whose final layer norm has no bias (freshly initialised or
trained from scratch) gives means near 0, where the division would blow the embedding up.
"""

from __future__ import annotations

import dataclasses
import re

import torch

from latentforge.models.tokenizer import visible_text

ROUND_FACTOR = 1.1  # `(text)`
SQUARE_FACTOR = 1 / 1.1  # `[text]`
BREAK = "BREAK"

_TOKEN_RE = re.compile(
    r"""
    \\[()\[\]\\]            # escaped bracket or backslash -> literal
    | \\                    # lone backslash -> literal
    | \(                    # open emphasis
    | \[                    # open de-emphasis
    | :\s*([+-]?[.\d]+)\s*\)  # ':1.3)' closes a round bracket with an explicit factor
    | \)
    | \]
    | [^\\()\[\]:]+         # plain text
    | :                     # a colon that is not a weight
    """,
    re.VERBOSE,
)
_BREAK_RE = re.compile(r"\s*\bBREAK\b\s*")


@dataclasses.dataclass
class Fragment:
    """A run of prompt text with one weight; `text is None` marks a BREAK."""

    text: str | None
    weight: float = 1.0


def parse_prompt_weights(prompt: str) -> list[Fragment]:
    """Split `prompt` into fragments with their emphasis weights; runs of equal weight are merged."""
    fragments: list[Fragment] = []
    open_at: dict[str, list[int]] = {"(": [], "[": []}  # index of the first fragment inside each open bracket
    for match in _TOKEN_RE.finditer(prompt):
        text = match.group(0)
        closing = _closing(text, match.group(1), open_at)
        if text.startswith("\\"):
            fragments.append(Fragment(text[1:] or text))
        elif text in open_at:
            open_at[text].append(len(fragments))
        elif closing is not None:
            _multiply(fragments, open_at[closing[0]].pop(), closing[1])
        else:  # plain text, or a bracket/colon without its partner: literal
            for i, part in enumerate(_BREAK_RE.split(text)):
                if i > 0:
                    fragments.append(Fragment(None))
                fragments.append(Fragment(part))
    # Brackets left open apply to the end of the prompt, as in A1111.
    for bracket, factor in (("(", ROUND_FACTOR), ("[", SQUARE_FACTOR)):
        for start in open_at[bracket]:
            _multiply(fragments, start, factor)
    return _merge_equal_weights(fragments)


def _closing(text: str, explicit: str | None, open_at: dict[str, list[int]]) -> tuple[str, float] | None:
    """(bracket, factor) when `text` closes an open bracket, else None."""
    if explicit is not None and open_at["("]:
        return "(", float(explicit)
    if text == ")" and open_at["("]:
        return "(", ROUND_FACTOR
    if text == "]" and open_at["["]:
        return "[", SQUARE_FACTOR
    return None


def _multiply(fragments: list[Fragment], start: int, factor: float) -> None:
    for fragment in fragments[start:]:
        fragment.weight *= factor


def _merge_equal_weights(fragments: list[Fragment]) -> list[Fragment]:
    merged: list[Fragment] = []
    for fragment in fragments:
        if fragment.text == "":
            continue
        last = merged[-1] if merged else None
        if last and last.text is not None and fragment.text is not None and last.weight == fragment.weight:
            last.text += fragment.text
        else:
            merged.append(fragment)
    return merged or [Fragment("")]


def tokenize_chunks(
    tokenizer, prompt: str, vectors: dict[int, list[int]] | None = None
) -> list[tuple[list[int], list[float]]]:
    """Token ids and weights of each chunk: `(ids, weights)` of length `model_max_length` (77) each.
    `vectors`: `multi_vector_tokens(tokenizer)`, when the caller has it for several prompts."""
    fragments = parse_prompt_weights(visible_text(prompt))
    texts = [f.text for f in fragments if f.text is not None]
    ids_per_text = (
        iter(tokenizer(texts, add_special_tokens=False, verbose=False).input_ids) if texts else iter(())
    )
    vectors = multi_vector_tokens(tokenizer) if vectors is None else vectors
    body = tokenizer.model_max_length - 2
    chunks: list[tuple[list[int], list[float]]] = []
    ids: list[int] = []
    weights: list[float] = []
    for fragment in fragments:
        if fragment.text is None:  # BREAK: close the chunk even if it is not full
            chunks.append((ids, weights))
            ids, weights = [], []
            continue
        for token in (t for first in next(ids_per_text) for t in vectors.get(first, (first,))):
            if len(ids) == body:
                chunks.append((ids, weights))
                ids, weights = [], []
            ids.append(token)
            weights.append(fragment.weight)
    if ids or not chunks:
        chunks.append((ids, weights))
    return [_frame(tokenizer, chunk_ids, chunk_weights) for chunk_ids, chunk_weights in chunks]


def multi_vector_tokens(tokenizer) -> dict[int, list[int]]:
    """Textual-inversion tokens with several vectors: id of `<tok>` -> ids of `<tok> <tok>_1 ... <tok>_n`, which
    it stands for in a prompt (what diffusers' `maybe_convert_prompt` does to the prompt text)."""
    added = tokenizer.added_tokens_encoder
    expansions = {}
    for token, token_id in added.items():
        parts = [token_id]
        while f"{token}_{len(parts)}" in added:
            parts.append(added[f"{token}_{len(parts)}"])
        if len(parts) > 1:
            expansions[token_id] = parts
    return expansions


def _frame(tokenizer, ids: list[int], weights: list[float]) -> tuple[list[int], list[float]]:
    pad = tokenizer.model_max_length - 2 - len(ids)
    framed = [tokenizer.bos_token_id, *ids, tokenizer.eos_token_id] + [tokenizer.pad_token_id] * pad
    return framed, [1.0, *weights, 1.0] + [1.0] * pad


def encode_texts(
    tokenizer,
    text_encoder,
    texts: list[str],
    clip_skip: int | None = None,
    device: torch.device | str | None = None,
    num_chunks: int | None = None,
) -> torch.Tensor:
    """Embeddings of `texts`: (B, 77 * chunks, D), every text padded with empty chunks to the longest one."""
    device = torch.device(device) if device is not None else text_encoder.device
    vectors = multi_vector_tokens(tokenizer)  # once for all texts: it scans the added tokens
    per_text = [tokenize_chunks(tokenizer, text, vectors) for text in texts]
    chunks = max([len(c) for c in per_text] + [num_chunks or 1])
    empty = _frame(tokenizer, [], [])
    per_text = [c + [empty] * (chunks - len(c)) for c in per_text]
    ids = torch.tensor([chunk[0] for c in per_text for chunk in c], device=device)
    weights = torch.tensor([chunk[1] for c in per_text for chunk in c])
    hidden = _run_text_encoder(text_encoder, ids, clip_skip)  # (B * chunks, 77, D)
    if not torch.all(weights == 1.0):
        weights = weights.to(hidden.device, hidden.dtype)[..., None]
        original_mean = hidden.mean(dim=(1, 2), keepdim=True)
        well_conditioned = original_mean.abs() > 0.01 * hidden.abs().mean(dim=(1, 2), keepdim=True)
        hidden = hidden * weights
        new_mean = hidden.mean(dim=(1, 2), keepdim=True)
        hidden = torch.where(well_conditioned, hidden * (original_mean / new_mean), hidden)
    hidden = hidden.to(device=device, dtype=text_encoder.dtype)
    return hidden.reshape(len(texts), chunks * ids.shape[1], hidden.shape[-1])


def _run_text_encoder(text_encoder, ids: torch.Tensor, clip_skip: int | None) -> torch.Tensor:
    mask = torch.ones_like(ids) if getattr(text_encoder.config, "use_attention_mask", False) else None
    if not clip_skip:
        return text_encoder(ids, attention_mask=mask)[0]
    # As diffusers: the hidden state `clip_skip` layers before the last, through the final layer norm.
    hidden = text_encoder(ids, attention_mask=mask, output_hidden_states=True).hidden_states[-(clip_skip + 1)]
    model = getattr(text_encoder, "text_model", text_encoder)  # transformers 5 dropped the `text_model` level
    return model.final_layer_norm(hidden)


def check_clip_skip(clip_skip: int | None, text_encoder) -> None:
    """ValueError unless `clip_skip` is None or an int in [0, number of text-encoder layers)."""
    layers = text_encoder.config.num_hidden_layers
    if clip_skip is not None and (not isinstance(clip_skip, int) or not 0 <= clip_skip < layers):
        raise ValueError(
            f"clip_skip must be None or an int in [0, {layers - 1}] for this model, got {clip_skip!r}"
        )


def encode_prompt(
    tokenizer,
    text_encoder,
    prompt: str | list[str] | None,
    negative_prompt: str | list[str] | None = None,
    prompt_embeds: torch.Tensor | None = None,
    negative_prompt_embeds: torch.Tensor | None = None,
    do_classifier_free_guidance: bool = True,
    clip_skip: int | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(prompt_embeds, negative_prompt_embeds), each (B, L, D) with the same L; negatives None without CFG.

    The unconditional branch uses the empty prompt "" when no negative prompt is given. Emphasis, chunking
    and `clip_skip` apply to the prompt and the negative prompt alike.
    """
    check_clip_skip(clip_skip, text_encoder)
    if prompt_embeds is None:
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        prompt_embeds = encode_texts(tokenizer, text_encoder, prompts, clip_skip, device)
    batch = prompt_embeds.shape[0]
    if not do_classifier_free_guidance:
        return prompt_embeds, None
    if negative_prompt_embeds is None:
        if negative_prompt is None:
            negatives = [""] * batch
        elif isinstance(negative_prompt, str):
            negatives = [negative_prompt] * batch
        else:
            negatives = list(negative_prompt)
        if len(negatives) != batch:
            raise ValueError(
                f"negative_prompt: got {len(negatives)} negative prompts for {batch} prompts; give one string, "
                "or a list with one negative prompt per prompt"
            )
        chunk = tokenizer.model_max_length
        chunks = prompt_embeds.shape[1] // chunk if prompt_embeds.shape[1] % chunk == 0 else None
        negative_prompt_embeds = encode_texts(tokenizer, text_encoder, negatives, clip_skip, device, chunks)
    if prompt_embeds.shape[1] < negative_prompt_embeds.shape[1]:
        # The negative prompt has more 75-token chunks than the prompt: extend the prompt with empty chunks.
        empty = encode_texts(tokenizer, text_encoder, [""], clip_skip, device)
        prompt_embeds = _pad_with(prompt_embeds, empty, negative_prompt_embeds.shape[1], "prompt_embeds")
    if prompt_embeds.shape != negative_prompt_embeds.shape:
        raise ValueError(
            f"negative_prompt_embeds: shape {tuple(negative_prompt_embeds.shape)} differs from prompt_embeds "
            f"{tuple(prompt_embeds.shape)}; give embeddings of equal shape"
        )
    return prompt_embeds, negative_prompt_embeds.to(prompt_embeds.device, prompt_embeds.dtype)


def _pad_with(embeds: torch.Tensor, empty: torch.Tensor, length: int, name: str) -> torch.Tensor:
    """Append empty-prompt chunks `empty` (1, 77, D) to `embeds` (B, L, D) until it is `length` long."""
    chunk = empty.shape[1]
    missing = length - embeds.shape[1]
    if missing % chunk or embeds.shape[1] % chunk:
        raise ValueError(
            f"{name}: sequence length {embeds.shape[1]} cannot be padded to {length}; prompt and negative "
            f"embeddings need equal lengths, or lengths that are multiples of {chunk} (one per 75-token chunk)"
        )
    pad = empty.to(embeds.device, embeds.dtype).repeat(embeds.shape[0], missing // chunk, 1)
    return torch.cat([embeds, pad], dim=1)
