"""The U-Net trainer's data, two ways: rows of the latent cache (`cached_data`: the VAE and text encoder run
once over the set), or batches streamed from tar shards and encoded as they come (`streamed_data`, data.shards:
sets too large to cache). Either gives the loop a loader and a function from a batch to its inputs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from latentforge.data.shards import check_readable, find_shards
from latentforge.data.streaming import shard_loader
from latentforge.data.training_data import load_splits
from latentforge.data.transforms import swap_left_right
from latentforge.models.components import Components
from latentforge.training.dreambooth import draw_class_rows, dreambooth_images, uses_prior
from latentforge.training.latent_cache import load_or_build_cache, sample_inputs
from latentforge.training.relation_words import flip_relation_targets, relation_targets
from latentforge.training.run import TrainingRun
from latentforge.training.shape_maps import check_scenes, shape_targets
from latentforge.training.stage_configs import UNetTrainConfig
from latentforge.training.stream_encoding import stream_inputs
from latentforge.training.token_grounding import phrase_targets
from latentforge.training.trained_models import trains_text_encoder


def check_streaming(config: UNetTrainConfig) -> None:
    """data.shards: the shards exist and are tars, and nothing asks for what only the latent cache gives."""
    check_readable(find_shards(config.data.shards))
    if config.dreambooth.instance_data:
        raise ValueError(
            "data.shards streams a large set; DreamBooth (dreambooth.instance_data) needs neither"
        )
    if config.data.buckets:
        raise ValueError(
            "data.buckets=true needs the latent cache; streamed shards (data.shards) train square"
        )


@dataclass
class UNetData:
    """What the loop trains on: its batches, and how a batch becomes (latents, embeds, pixels)."""

    loader: Any
    inputs: Callable  # (batch, text model or None) -> (latents, embeds, pixels)
    prior: Callable | None  # DreamBooth prior preservation: (batch, text model) -> class images' inputs
    size: tuple[int, int]  # (height, width) of the validation images
    summary: dict[str, Any]  # for the model card
    images: tuple[int, int]  # (training or instance images, class images)
    shape_targets: Any = (
        None  # shape_map_weight: (rows, classes [+ centres], h, w) per latent cell of each row
    )
    phrase_targets: Any = None  # token_grounding_weight: (masks, tokens) of each row's named phrases
    relation_targets: Any = None  # relation_words_weight: (labels, tokens) of each row's relation
    # the cache's variants per row (2 with data.random_flip); the targets above hold row r's variant v at
    # r * flip_variants + v (`scene_keys`)
    flip_variants: int = 1


def cached_data(components: Components, config: UNetTrainConfig, run: TrainingRun) -> UNetData:
    """Batches of rows of the latent cache (built once by the main process)."""
    accelerator = run.accelerator
    if config.dreambooth.instance_data:  # instance photos (+ class images)
        train_data, n_instance = dreambooth_images(accelerator, components, config, run.dir)
    else:
        train_data = load_splits(config.data, ("scene",) if uses_scenes(config) else ())[0]
        n_instance = len(train_data)
        if uses_scenes(config):
            check_scenes(train_data)
    cache = load_or_build_cache(
        accelerator,
        components,
        train_data,
        config.data,
        run.dir.root,
        components.is_inpaint,
        config.cache_dtype,
        with_embeddings=not trains_text_encoder(config),
    ).to(accelerator.device)
    instance = cache.index < n_instance  # DreamBooth: the rest are class images, drawn beside each batch
    loader = cache.row_loader(config.optim.batch_size, config.seed, instance.nonzero()[:, 0].cpu())
    scaling = components.vae.config.scaling_factor

    def inputs(batch, text_model=None, rows=None):
        rows = batch["index"] if rows is None else rows
        dropped, variant = batch.get("caption_dropped"), batch.get("flip_variant")
        return sample_inputs(cache, rows, scaling, config.caption_dropout, text_model, dropped, variant)

    class_rows = (~instance).nonzero()[:, 0]

    def prior(batch, text_model=None):
        return inputs(batch, text_model, draw_class_rows(cache.bucket, class_rows, len(batch["index"])))

    summary = {
        "cached_images": len(cache),
        "corrupt_images_skipped_in_cache": cache.skipped,
        "images_per_bucket": {f"{w}x{h}": n for (h, w), n in cache.bucket_counts().items()},
    }
    size = next(iter(cache.bucket_counts()))  # validation at the most used bucket's size
    images = (int(instance.sum()), int((~instance).sum()))
    targets = phrases = relations = None
    variants = cache.mean[0].shape[1]
    rows = train_data.select(cache.index.cpu().tolist()) if uses_row_targets(config) else None
    if config.relation_words_weight:
        captions = list(rows["text"])
        relations = flip_relation_targets(*relation_targets(captions, components.tokenizer), variants)
    if uses_scenes(config):
        scenes, cells = list(rows["scene"]), tuple(cache.mean[0].shape[-2:])
        if config.shape_map_weight:
            targets = flip_variants(shape_targets(scenes, cells, bool(config.shape_map_centers)), variants)
            targets = targets.to(accelerator.device)
        if config.token_grounding_weight:
            captions = list(rows["text"])
            relation = config.token_grounding_relation
            masks, tokens = phrase_targets(scenes, captions, components.tokenizer, cells, relation)
            if variants == 2:
                flipped = flipped_tokens(scenes, captions, tokens, components.tokenizer, cells, relation)
                tokens = torch.stack([tokens, flipped], 1).flatten(0, 1)
            phrases = (flip_variants(masks, variants), tokens)
    prior = prior if uses_prior(config.dreambooth) else None
    return UNetData(loader, inputs, prior, size, summary, images, targets, phrases, relations, variants)


def flip_variants(maps: torch.Tensor, variants: int) -> torch.Tensor:
    """Per-row maps (N, ..., h, w) -> (N * variants, ..., h, w): each row's maps, then (with 2 variants) the
    same mirrored left to right, as the cache holds each image and its flip."""
    if variants == 1:
        return maps
    return torch.stack([maps, maps.flip(-1)], 1).flatten(0, 1)


def flipped_tokens(
    scenes: list[str], captions: list[str], tokens: torch.Tensor, tokenizer, cells, relation: bool = False
) -> torch.Tensor:
    """`phrase_targets`' tokens of the flipped images' captions, 'left'/'right' swapped (which may tokenize
    apart), given those of the captions (`tokens`): only the captions that name a side are tokenized again."""
    flipped, swapped = tokens.clone(), [swap_left_right(caption) for caption in captions]
    changed = [i for i, (a, b) in enumerate(zip(captions, swapped, strict=True)) if a != b]
    if changed:
        pick = [scenes[i] for i in changed], [swapped[i] for i in changed]
        flipped[changed] = phrase_targets(*pick, tokenizer, cells, relation)[1]
    return flipped


def scene_keys(batch: dict, data: UNetData) -> torch.Tensor:
    """The rows of the row losses' targets (`flip_variants`) for a batch: its cache rows at the flip variant
    the train step drew for each (`batch["flip_variant"]`)."""
    return batch["index"] * data.flip_variants + batch["flip_variant"].to(batch["index"].device)


def uses_row_targets(config: UNetTrainConfig) -> bool:
    """Whether a loss reads targets per latent-cache row (the scene losses, `relation_words_weight`): the train
    step then draws each row's flip variant itself, so that latents and targets agree."""
    return uses_scenes(config) or bool(config.relation_words_weight)


def uses_scenes(config: UNetTrainConfig) -> bool:
    """Whether a loss reads the shapes data's scenes (`shape_map_weight`, `token_grounding_weight`)."""
    return bool(config.shape_map_weight or config.token_grounding_weight)


def check_scene_losses(config: UNetTrainConfig) -> None:
    """ValueError for settings of the losses on the shapes data's scenes that cannot work."""
    for key in ("shape_map_weight", "token_grounding_weight"):
        if getattr(config, key) < 0:
            raise ValueError(f"{key} must be >= 0 (0 = off), got {getattr(config, key)}")
    if config.shape_map_centers < 0 or (config.shape_map_centers and not config.shape_map_weight):
        raise ValueError(
            f"shape_map_centers={config.shape_map_centers}: the centre heatmap is a term of the shape map's loss; "
            "give it a weight >= 0 with shape_map_weight > 0 (e.g. shape_map_weight=0.5 shape_map_centers=1)"
        )
    if config.token_grounding_relation and not config.token_grounding_weight:
        raise ValueError(
            "token_grounding_relation=true adds the relation word to the token-grounding loss: give it a weight "
            "(e.g. token_grounding_weight=0.3), or token_grounding_relation=false"
        )
    if uses_scenes(config) and (config.data.shards or config.data.buckets or config.dreambooth.instance_data):
        raise ValueError(
            "shape_map_weight and token_grounding_weight > 0 read each cached image's scene at the latents' "
            "cells: they need the latent cache of one square size (data.shards and dreambooth.instance_data "
            "unset, data.buckets=false), or both at 0"
        )


def streamed_data(accelerator, components: Components, config: UNetTrainConfig) -> UNetData:
    """Batches streamed from data.shards, this process's share, encoded as they come."""
    rank, world = accelerator.process_index, accelerator.num_processes
    loader = shard_loader(config.data, config.optim.batch_size, rank, world)
    scaling = components.vae.config.scaling_factor

    def inputs(batch, text_model=None):
        return stream_inputs(components, batch, scaling, config.caption_dropout, text_model)

    per_epoch = loader.stream.samples_per_epoch * world
    summary = {"streamed_shards": len(loader.stream.shards), "samples_per_epoch": per_epoch}
    size = (config.data.resolution, config.data.resolution)
    return UNetData(loader, inputs, None, size, summary, (per_epoch, 0))
