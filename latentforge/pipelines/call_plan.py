"""The validation of a pipeline call, done in full before any model runs: `plan_call` checks a `CallArgs`
(each error names the argument) and returns a `CallPlan`: the arguments plus what they imply (prompt lists,
batch, output size, image and mask tensors, CPU generators).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch

from latentforge.models.components import inpaint_in_channels
from latentforge.pipelines import image_inputs
from latentforge.pipelines.call_args import OUTPUT_TYPES, CallArgs
from latentforge.pipelines.denoising import Generator
from latentforge.pipelines.prompts import check_clip_skip


@dataclasses.dataclass
class CallPlan:
    """A checked call: `args` (numbers as float, flags as bool) and what they imply, used instead of them."""

    args: CallArgs
    prompts: list[str] | None  # None when args.prompt_embeds is given
    negative_prompts: list[str] | None  # one per prompt
    batch: int  # prompts, or rows of prompt_embeds
    height: int
    width: int
    generator: Generator  # CPU generators: one, or one per image
    images: torch.Tensor | None  # (N, 3, height, width) in [0, 1]
    masks: torch.Tensor | None  # (M, 1, height, width) in [0, 1]

    @property
    def total(self) -> int:
        """Images made by the call: prompts x images per prompt."""
        return self.batch * self.args.num_images_per_prompt


def plan_call(pipe: Any, task: str, args: CallArgs) -> CallPlan:
    """Check every argument of a `task` ("txt2img", "img2img", "inpaint") call and derive the plan."""
    _check_unet(pipe.unet, pipe.vae.config.latent_channels, task)
    _check_task_keywords(args, task)
    prompts, negatives, batch = _check_prompts(args)
    _check_numbers(args)
    check_clip_skip(args.clip_skip, pipe.text_encoder)
    if args.output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}; got {args.output_type!r}")
    if args.callback_on_step_end is not None and not callable(args.callback_on_step_end):
        raise ValueError(
            "callback_on_step_end must be callable (pipe, step, timestep, tensors) -> dict or None"
        )
    for name, value in (("paste_back", args.paste_back), ("return_dict", args.return_dict)):
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{name} must be True or False, got {value!r}")
    images, masks, height, width = _check_images(pipe, task, args, batch)
    total = batch * args.num_images_per_prompt
    factor = pipe.vae_scale_factor
    latent_shape = (total, pipe.vae.config.latent_channels, height // factor, width // factor)
    _check_tensor_arguments(pipe, args)
    if args.latents is not None and tuple(args.latents.shape) != latent_shape:
        raise ValueError(
            f"latents: expected shape {latent_shape} (images x channels x height/{factor} x width/{factor}), "
            f"got {tuple(args.latents.shape)}"
        )
    generator = normalize_generator(args.generator, total)
    checked = dataclasses.replace(
        args,
        strength=float(args.strength),
        guidance_scale=float(args.guidance_scale),
        guidance_rescale=float(args.guidance_rescale),
        eta=float(args.eta),
        mask_blur=float(args.mask_blur),
        paste_back=bool(args.paste_back),
        return_dict=bool(args.return_dict),
    )
    return CallPlan(checked, prompts, negatives, batch, height, width, generator, images, masks)


def _check_unet(unet, latent_channels: int, task: str) -> None:
    channels, inpaint = unet.config.in_channels, inpaint_in_channels(latent_channels)
    if channels not in (latent_channels, inpaint):
        raise ValueError(
            f"unet: in_channels must be the VAE's {latent_channels} latent channels or {inpaint} "
            f"(inpainting: latents + mask + masked-image latents), this model has {channels}"
        )
    if channels != latent_channels and task != "inpaint":
        raise ValueError(
            f"this model has a {channels}-channel inpainting U-Net (latents + mask + masked image), which needs a "
            f"mask: use InpaintPipeline (`latentforge inpaint`), or a {latent_channels}-channel model for this task"
        )


def _check_task_keywords(args: CallArgs, task: str) -> None:
    """A keyword another task takes must keep its default (only `generate(CallArgs(...))` can set it)."""
    for field in dataclasses.fields(CallArgs):
        value = getattr(args, field.name)
        unchanged = value is field.default or (type(value) in (bool, int, float) and value == field.default)
        tasks = field.metadata["tasks"]
        if task not in tasks and not unchanged:
            raise ValueError(
                f"{field.name}: a {task} call takes no {field.name} (it is for {' and '.join(tasks)})"
            )


def _check_prompts(args: CallArgs) -> tuple[list[str] | None, list[str] | None, int]:
    prompt, negative_prompt, prompt_embeds = args.prompt, args.negative_prompt, args.prompt_embeds
    if (prompt is None) == (prompt_embeds is None):
        raise ValueError(
            "give exactly one of prompt and prompt_embeds; got "
            + ("both" if prompt is not None else "neither")
        )
    if prompt is not None:
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError(
                f"prompt must be a string or a non-empty list of strings, got {type(prompt).__name__}"
            )
        batch = len(prompts)
    else:
        if not isinstance(prompt_embeds, torch.Tensor) or prompt_embeds.ndim != 3:
            raise ValueError("prompt_embeds must be a tensor (batch, tokens, dim)")
        prompts, batch = None, prompt_embeds.shape[0]
    if negative_prompt is not None and args.negative_prompt_embeds is not None:
        raise ValueError("give at most one of negative_prompt and negative_prompt_embeds, not both")
    negatives = [negative_prompt] * batch if isinstance(negative_prompt, str) else negative_prompt
    if negatives is not None and (
        not isinstance(negatives, list) or not all(isinstance(n, str) for n in negatives)
    ):
        raise ValueError(
            f"negative_prompt must be a string or a list of strings, got {type(negative_prompt).__name__}"
        )
    if negatives is not None and len(negatives) != batch:
        raise ValueError(
            f"negative_prompt: the list has {len(negatives)} entries but there are {batch} prompts; "
            "give one string for all, or one per prompt"
        )
    negative_embeds = args.negative_prompt_embeds
    if negative_embeds is not None and (
        not isinstance(negative_embeds, torch.Tensor) or negative_embeds.shape[0] != batch
    ):
        raise ValueError(f"negative_prompt_embeds must be a tensor with {batch} rows, one per prompt")
    return prompts, negatives, batch


def _check_tensor_arguments(pipe, args: CallArgs) -> None:
    """latents, prompt_embeds and negative_prompt_embeds: tensors of finite numbers (a NaN or Inf would only
    show after the loop, as a black image or an overflow) whose embedding width fits the U-Net."""
    width = pipe.unet.config.cross_attention_dim
    for name in ("latents", "prompt_embeds", "negative_prompt_embeds"):
        value = getattr(args, name)
        if value is None:
            continue
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise ValueError(f"{name} must be a floating-point torch.Tensor, got {type(value).__name__}")
        if not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise ValueError(
                f"{name} holds {bad} NaN/Inf value(s) of {value.numel()}; pass finite numbers (check what made it)"
            )
        if name != "latents" and value.shape[-1] != width:
            raise ValueError(
                f"{name}: the last dimension is {value.shape[-1]} but this model's U-Net takes text embeddings "
                f"of width {width} (cross_attention_dim); make them with this model's text encoder"
            )
    positive, negative = args.prompt_embeds, args.negative_prompt_embeds
    if positive is not None and negative is not None and positive.shape != negative.shape:
        raise ValueError(
            f"prompt_embeds {tuple(positive.shape)} and negative_prompt_embeds {tuple(negative.shape)} must have "
            "the same shape"
        )


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_numbers(args: CallArgs) -> None:
    steps = args.num_inference_steps
    if not _is_int(steps) or steps < 1:
        raise ValueError(f"num_inference_steps must be an int >= 1, got {steps!r}")
    if not _is_number(args.guidance_scale) or args.guidance_scale < 0:
        raise ValueError(
            f"guidance_scale must be a number >= 0 (<= 1 turns guidance off), got {args.guidance_scale!r}"
        )
    if not _is_number(args.guidance_rescale) or not 0 <= args.guidance_rescale <= 1:
        raise ValueError(f"guidance_rescale must be in [0, 1], got {args.guidance_rescale!r}")
    count = args.num_images_per_prompt
    if not _is_int(count) or count < 1:
        raise ValueError(f"num_images_per_prompt must be an int >= 1, got {count!r}")
    if not _is_number(args.eta) or args.eta < 0:
        raise ValueError(f"eta must be a number >= 0, got {args.eta!r}")
    if not _is_number(args.mask_blur) or args.mask_blur < 0:
        raise ValueError(f"mask_blur must be a number of pixels >= 0, got {args.mask_blur!r}")
    strength = args.strength
    if not _is_number(strength) or not 0 < strength <= 1:
        raise ValueError(f"strength must be in (0, 1], got {strength!r}")
    if int(steps * strength) < 1:
        raise ValueError(
            f"strength: {strength} x num_inference_steps {steps} runs int({steps * strength:g}) = 0 steps; "
            f"raise strength to at least {1 / steps:g} or use more steps"
        )


def _check_images(pipe, task: str, args: CallArgs, batch: int):
    factor = pipe.vae_scale_factor
    height, width = args.height, args.width
    for name, value in (("height", height), ("width", width)):
        if value is not None and not _is_int(value):
            raise ValueError(f"{name} must be an int (pixels), got {value!r}")
    if task == "txt2img":
        size = pipe.unet.config.sample_size * factor
        height, width = height or size, width or size
        image_inputs.check_size(height, width, factor, "height/width")
        return None, None, height, width
    if args.image is None:
        raise ValueError(f"image is required for {task}: a path, PIL image, numpy array or tensor")
    images = image_inputs.to_tensor(args.image, "image", 3)
    if images.shape[0] not in (1, batch):
        raise ValueError(
            f"image: got {images.shape[0]} images for {batch} prompts; give one image or one per prompt"
        )
    masks = _check_masks(args.mask_image, images) if task == "inpaint" else None
    source = "height/width" if height or width else f"the image size {images.shape[-1]}x{images.shape[-2]}"
    # a size not given is the image's, rounded down to the factor (as diffusers' VaeImageProcessor does)
    height = height or images.shape[-2] - images.shape[-2] % factor
    width = width or images.shape[-1] - images.shape[-1] % factor
    image_inputs.check_size(height, width, factor, source)
    images = image_inputs.resize(images, height, width)
    masks = image_inputs.resize(masks, height, width) if masks is not None else None
    return images, masks, height, width


def _check_masks(mask_image: image_inputs.ImageInput, images: torch.Tensor) -> torch.Tensor:
    if mask_image is None:
        raise ValueError("mask_image is required for inpainting (white = repaint, black = keep)")
    masks = image_inputs.to_tensor(mask_image, "mask_image", 1)
    if masks.shape[-2:] != images.shape[-2:]:
        raise ValueError(
            f"mask_image is {masks.shape[-1]}x{masks.shape[-2]} but image is {images.shape[-1]}x"
            f"{images.shape[-2]}; give a mask of the image's size"
        )
    if masks.shape[0] not in (1, images.shape[0]):
        raise ValueError(
            f"mask_image: got {masks.shape[0]} masks for {images.shape[0]} images; give 1 or one each"
        )
    return masks


def normalize_generator(generator, total: int) -> Generator:
    """A torch.Generator or a list of `total` of them; ints become seeded CPU generators.

    None gives one CPU generator seeded from torch's global CPU RNG, so noise is made on the CPU (and is the
    same on every device) and `torch.manual_seed` still makes a call reproducible.
    """
    if generator is None:
        seed = int(torch.randint(0, 2**63 - 1, (1,)).item())
        return torch.Generator("cpu").manual_seed(seed)
    items = generator if isinstance(generator, list) else [generator]
    normalized = []
    for item in items:
        if _is_int(item):
            normalized.append(torch.Generator("cpu").manual_seed(item))
        elif isinstance(item, torch.Generator):
            normalized.append(item)
        else:
            raise ValueError(
                f"generator must be a torch.Generator, an int seed, or a list of them; got {item!r}"
            )
    if not isinstance(generator, list):
        return normalized[0]
    if len(normalized) != total:
        raise ValueError(
            f"generator: a list of {len(normalized)} generators/seeds for {total} images "
            "(prompts x num_images_per_prompt); give one per image"
        )
    return normalized
