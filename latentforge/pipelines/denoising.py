"""The one denoising core behind text-to-image, image-to-image and inpainting.

The three tasks differ only in where the schedule starts (`strength`), how the first latents are made (pure
noise, or the source image's latents noised to the first timestep) and an optional inpainting condition:
a 9-channel U-Net gets the mask and the masked image's latents concatenated to its input, a 4-channel U-Net
gets the known region blended back after every step. Everything else (guidance, the step loop, decoding)
is shared. Each function keeps what it needs in local variables, so one pipeline serves several threads.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import warnings
from collections.abc import Callable
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

from latentforge.pipelines import step_cache

Generator = torch.Generator | list[torch.Generator] | None


def classifier_free_guidance(
    noise_pred: torch.Tensor, guidance_scale: float, guidance_rescale: float = 0.0
) -> torch.Tensor:
    """Mix `noise_pred` (2B, C, h, w) = [unconditional; conditional] into (B, C, h, w).

    Classifier-free guidance (Ho & Salimans 2022): `uncond + scale * (cond - uncond)`. With
    `guidance_rescale` > 0 the result is rescaled towards the standard deviation of the conditional
    prediction, which counters over-exposure at high scales (Lin et al. 2023, "Common Diffusion Noise
    Schedules and Sample Steps are Flawed", section 3.4, eq. 15-16).
    """
    uncond, cond = noise_pred.chunk(2)
    guided = uncond + guidance_scale * (cond - uncond)
    if guidance_rescale > 0:
        dims = list(range(1, cond.ndim))
        rescaled = guided * (cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True))
        guided = guidance_rescale * rescaled + (1 - guidance_rescale) * guided
    return guided


def set_timesteps(scheduler, num_inference_steps: int, strength: float, device: torch.device) -> torch.Tensor:
    """Set `scheduler` for `num_inference_steps` and return the timesteps to run.

    With `strength` < 1 only the last int(steps * strength) steps run (img2img as in SDEdit, Meng et al.
    2022, and in diffusers): the schedule is cut at the front and the scheduler told where it begins.
    """
    scheduler.set_timesteps(num_inference_steps, device=device)
    run = min(int(num_inference_steps * strength), num_inference_steps)
    start = (num_inference_steps - run) * scheduler.order
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(start)
    return scheduler.timesteps[start:]


def draw_noise(shape: tuple[int, ...], generator: Generator, device, dtype) -> torch.Tensor:
    """Gaussian noise (B, C, h, w); a list of generators draws image i from generator i alone."""
    return randn_tensor(shape, generator=generator, device=torch.device(device), dtype=dtype)


def prepare_latents(
    scheduler,
    shape: tuple[int, ...],
    generator: Generator,
    device: torch.device,
    dtype: torch.dtype,
    latents: torch.Tensor | None = None,
    image_latents: torch.Tensor | None = None,
    timestep: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(first latents, noise), both (B, C, h, w).

    `latents`, when given, is the noise to start from. Without `image_latents` the noise is scaled to the
    scheduler's initial sigma (text-to-image, or strength 1); with them the image latents are noised to
    `timestep` (the first timestep that runs).
    """
    noise = latents.to(device=device, dtype=dtype) if latents is not None else None
    if noise is None:
        noise = draw_noise(shape, generator, device, dtype)
    if image_latents is None:
        return noise * scheduler.init_noise_sigma, noise
    return scheduler.add_noise(image_latents, noise, timestep), noise


def encode_images(
    vae, images: torch.Tensor, repeats: int, generator: Generator, device: torch.device
) -> torch.Tensor:
    """Latents (N * repeats, C, h, w) of `images` (N, 3, H, W) in [-1, 1], each image repeated `repeats` times.

    The latents are sampled from the VAE's posterior with the generator(s), as diffusers does; a list of
    generators gives image i its own sample.
    """
    images = images.to(device=device, dtype=vae.dtype)
    if isinstance(generator, list):
        images = images.repeat_interleave(repeats, dim=0)
        latents = torch.cat(
            [vae.encode(images[i : i + 1]).latent_dist.sample(generator[i]) for i in range(len(images))]
        )
    else:
        latents = vae.encode(images).latent_dist.sample(generator).repeat_interleave(repeats, dim=0)
    return vae.config.scaling_factor * latents


def skip_posterior_sample(
    shape: tuple[int, ...], generator: Generator, device: torch.device, dtype: torch.dtype
) -> None:
    """Advance the generator(s) as `encode_images` of images of latent `shape` would, without the VAE.

    diffusers' inpainting pipeline samples masked-image latents even for 4-channel U-Nets, which never use
    them; drawing the same numbers keeps the later ancestral-sampler noise, and so our images, equal to its.
    """
    if isinstance(generator, list):
        shape = (len(generator), *shape[1:])
    draw_noise(shape, generator, device, dtype)


def damaged_weights(networks: dict[str, torch.nn.Module]) -> str:
    """'' when every parameter of `networks` (name -> module) is finite, else a sentence naming the first
    damaged tensors: what a NaN in the output means when it is not an overflow."""
    for name, module in networks.items():
        if module is None:
            continue
        bad = [key for key, value in module.state_dict().items() if not torch.isfinite(value).all()]
        if bad:
            return (
                f"the {name}'s weights hold NaN or Inf ({len(bad)} tensors, e.g. {', '.join(bad[:3])}): the model "
                "files are damaged; restore, re-download or re-export the model"
            )
    return ""


def decode_latents(
    vae, latents: torch.Tensor, networks: dict[str, torch.nn.Module] | None = None
) -> torch.Tensor:
    """Images (B, 3, H, W) in about [-1, 1] from latents (B, C, h, w).

    A half-precision VAE can overflow; when its output is not finite the decode is redone with a float32
    copy of the VAE and a warning. Non-finite latents raise FloatingPointError rather than give a black
    image: naming the damaged weights when one of `networks` (the U-Net, the text encoder) has any (checked
    only then, so a good call pays nothing), else as an overflow.
    """
    if not torch.isfinite(latents).all():
        raise FloatingPointError(
            damaged_weights(networks or {})
            or "the denoised latents contain NaN or Inf (the U-Net overflowed); run in float32 or bfloat16"
        )
    scaled = latents / vae.config.scaling_factor
    image = vae.decode(scaled.to(vae.dtype), return_dict=False)[0]
    if vae.dtype in (torch.float16, torch.bfloat16) and not torch.isfinite(image).all():
        warnings.warn(
            f"the VAE decode in {vae.dtype} gave NaN or Inf; decoding again in float32",
            RuntimeWarning,
            stacklevel=3,
        )
        # A copy, not an in-place upcast: other threads may be using the half-precision VAE right now.
        vae32 = copy.deepcopy(vae).to(torch.float32)
        image = vae32.decode(scaled.to(torch.float32), return_dict=False)[0]
    if not torch.isfinite(image).all():
        raise FloatingPointError(
            damaged_weights({"VAE": vae}) or "the VAE decode gave NaN or Inf even in float32"
        )
    return image


@dataclasses.dataclass
class InpaintCondition:
    """What the inpainting step needs: mask (B, 1, h, w) in [0, 1], 1 = repaint.

    Inpainting U-Net (2C + 1 input channels): `masked_image_latents` (B, C, h, w) are concatenated to the input with the mask.
    Text-to-image U-Net: `image_latents` noised with `noise` to the next timestep replace the kept region.
    """

    mask: torch.Tensor
    masked_image_latents: torch.Tensor | None = None
    image_latents: torch.Tensor | None = None
    noise: torch.Tensor | None = None

    def unet_input(self, model_input: torch.Tensor) -> torch.Tensor:
        if self.masked_image_latents is None:
            return model_input
        repeat = model_input.shape[0] // self.mask.shape[0]  # 2 with guidance: [uncond; cond]
        extra = torch.cat([self.mask, self.masked_image_latents], dim=1).repeat(repeat, 1, 1, 1)
        return torch.cat([model_input, extra.to(model_input.dtype)], dim=1)

    def blend(self, latents: torch.Tensor, scheduler, next_timestep: torch.Tensor | None) -> torch.Tensor:
        if self.image_latents is None:
            return latents
        known = self.image_latents
        if next_timestep is not None:
            known = scheduler.add_noise(known, self.noise, next_timestep)
        return (1 - self.mask) * known + self.mask * latents


StepCallback = Callable[[Any, int, torch.Tensor, dict[str, torch.Tensor]], dict[str, torch.Tensor] | None]


@dataclasses.dataclass
class DenoiseJob:
    """Everything one call's denoising loop uses; built per call, never stored on the pipeline."""

    unet: torch.nn.Module
    scheduler: Any  # a private copy for this call
    timesteps: torch.Tensor
    latents: torch.Tensor  # (B, C, h, w)
    embeddings: torch.Tensor  # (2B, L, D) = [negative; prompt] with guidance, else (B, L, D)
    guidance_scale: float
    guidance_rescale: float = 0.0
    generator: Generator = None
    eta: float = 0.0
    inpaint: InpaintCondition | None = None
    callback: StepCallback | None = None
    pipeline: Any = None  # passed to the callback, as diffusers does
    progress: dict[str, Any] = dataclasses.field(default_factory=dict)  # tqdm options

    @property
    def do_guidance(self) -> bool:
        return self.embeddings.shape[0] == 2 * self.latents.shape[0]


def step_kwargs(scheduler, generator: Generator, eta: float) -> dict[str, Any]:
    """`eta` (DDIM) and `generator` (ancestral / SDE samplers) for schedulers whose `step` takes them."""
    accepted = inspect.signature(scheduler.step).parameters
    kwargs: dict[str, Any] = {}
    if "eta" in accepted:
        kwargs["eta"] = eta
    if "generator" in accepted:
        kwargs["generator"] = generator
    return kwargs


def denoise(job: DenoiseJob) -> torch.Tensor:
    """Run the sampling loop; returns the final latents (B, C, h, w).

    With step caching switched on for `job.unet` (`step_cache.enable`), this call gets its own cache: the
    steps between full ones reuse the U-Net's deep features.
    """
    latents, scheduler, timesteps = job.latents, job.scheduler, job.timesteps
    extra = step_kwargs(scheduler, job.generator, job.eta)
    progress = tqdm(total=len(timesteps), **{"desc": "denoising", "leave": False, **job.progress})
    with progress, step_cache.call_cache(job.unet) as cache:
        for i, t in enumerate(timesteps):
            if cache is not None:
                cache.start_step(i)
            model_input = torch.cat([latents] * 2) if job.do_guidance else latents
            model_input = scheduler.scale_model_input(model_input, t)
            if job.inpaint is not None:
                model_input = job.inpaint.unet_input(model_input)
            noise_pred = job.unet(model_input, t, encoder_hidden_states=job.embeddings, return_dict=False)[0]
            if job.do_guidance:
                noise_pred = classifier_free_guidance(noise_pred, job.guidance_scale, job.guidance_rescale)
            latents = scheduler.step(noise_pred, t, latents, **extra, return_dict=False)[0]
            if job.inpaint is not None:
                next_t = timesteps[i + 1 : i + 2] if i + 1 < len(timesteps) else None
                latents = job.inpaint.blend(latents, scheduler, next_t)
            if job.callback is not None:
                returned = job.callback(job.pipeline, i, t, {"latents": latents}) or {}
                latents = returned.get("latents", latents)
            progress.update()
    return latents
