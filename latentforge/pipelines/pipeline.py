"""TextToImagePipeline, ImageToImagePipeline and InpaintPipeline: thin task front-ends over one base.

Each class's `__call__` binds its arguments into a `call_args.CallArgs` (its signature and docs are made
from that one list) and runs `generate`, which validates the call (`call_plan.plan_call`), encodes the
prompts, prepares the first latents and the inpainting condition, runs the shared loop (`denoising.denoise`)
and decodes. Per-call values live in local variables and a private copy of the scheduler, so one pipeline
object can serve several threads.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from typing import Any, ClassVar

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers.utils import BaseOutput

from latentforge.imaging import to_pil
from latentforge.models.components import Components
from latentforge.pipelines import denoising, image_inputs
from latentforge.pipelines.adapters import AdapterMethods
from latentforge.pipelines.call_args import CallArgs, call_method
from latentforge.pipelines.call_plan import CallPlan, plan_call
from latentforge.pipelines.memory_switches import MemorySwitches
from latentforge.pipelines.prompts import encode_prompt
from latentforge.pipelines.schedulers import make_scheduler


@dataclasses.dataclass
class PipelineOutput(BaseOutput):
    """`images`: PIL images, numpy (B, H, W, 3) or torch (B, 3, H, W) in [0, 1], or latents (B, C, h, w)."""

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    nsfw_content_detected: list[bool] | None = None  # no safety checker; kept for diffusers compatibility


class _Pipeline(AdapterMethods, MemorySwitches):
    """Shared loading, saving, scheduler choice, adapters (LoRA, textual inversion) and the generation core of
    the three pipelines."""

    task: ClassVar[str] = ""

    def __init__(self, components: Components):
        if not isinstance(components, Components):
            raise TypeError(f"components must be a latentforge Components, got {type(components).__name__}")
        self.components = components
        self._progress: dict[str, Any] = {}

    # ---- construction and persistence ------------------------------------------------------------
    @classmethod
    def from_components(cls, components: Components):
        """A pipeline over `components` (the modules are used, not copied)."""
        return cls(components)

    @classmethod
    def from_pretrained(
        cls, path_or_id: str | os.PathLike, torch_dtype: torch.dtype | None = None, **file_options: Any
    ):
        """Load a diffusers-layout Stable Diffusion 1.x/2.x model folder (or hub id when online), or a
        single-file checkpoint given by its path (`from_single_file` with `file_options`)."""
        return cls(Components.from_pretrained(path_or_id, torch_dtype=torch_dtype, **file_options))

    @classmethod
    def from_single_file(
        cls, path: str | os.PathLike, torch_dtype: torch.dtype | None = None, **options: Any
    ):
        """Read a single-file SD 1.x/2.x checkpoint (original LDM layout); `options` (architecture,
        prediction_type, use_ema, allow_pickle) as `Components.from_single_file`."""
        return cls(Components.from_single_file(path, torch_dtype=torch_dtype, **options))

    @classmethod
    def from_pipe(cls, other: _Pipeline):
        """A pipeline of this class sharing `other`'s modules (no copy); its scheduler choice is its own."""
        pipe = cls(dataclasses.replace(other.components))
        pipe._progress = dict(other._progress)
        pipe._offload_device, pipe._offload_last_hook = other._offload_device, other._offload_last_hook
        return pipe

    def save_pretrained(self, path: str | os.PathLike, fp16: bool = False, overwrite: bool = False) -> None:
        """Write the model as a diffusers folder (see `Components.save_pretrained`)."""
        self.components.save_pretrained(path, fp16=fp16, overwrite=overwrite)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        """Move the networks to `device` and/or `dtype`; returns self."""
        self.components.to(device, dtype)
        return self

    def set_scheduler(self, name: str):
        """Sample with scheduler `name` (see `schedulers.SCHEDULERS`), built from the model's schedule; returns self."""
        self.components.scheduler = make_scheduler(name, self.components.scheduler.config)
        return self

    def set_progress_bar_config(self, **kwargs: Any) -> None:
        """tqdm options of the denoising progress bar, e.g. `disable=True`."""
        self._progress = dict(kwargs)

    # ---- components ------------------------------------------------------------------------------
    vae = property(lambda self: self.components.vae)
    text_encoder = property(lambda self: self.components.text_encoder)
    tokenizer = property(lambda self: self.components.tokenizer)
    unet = property(lambda self: self.components.unet)
    scheduler = property(lambda self: self.components.scheduler)
    vae_scale_factor = property(lambda self: self.components.vae_scale_factor)
    dtype = property(lambda self: self.components.dtype)

    @property
    def device(self) -> torch.device:
        """Where the networks run (the offload device when model CPU offload is on)."""
        return self._offload_device or self.components.device

    def encode_prompt(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        do_classifier_free_guidance: bool = True,
        clip_skip: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(prompt_embeds, negative_prompt_embeds) (B, L, D), ready for the `prompt_embeds` keywords."""
        with torch.no_grad(), self.adapter_lock.generating():
            return encode_prompt(
                self.tokenizer,
                self.text_encoder,
                prompt,
                negative_prompt,
                do_classifier_free_guidance=do_classifier_free_guidance,
                clip_skip=clip_skip,
                device=self.device,
            )

    # ---- generation ------------------------------------------------------------------------------
    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A class that sets `task` gets its `__call__` made from `CallArgs` (signature, binding, docs)."""
        super().__init_subclass__(**kwargs)
        if "task" in cls.__dict__:
            cls.__call__ = call_method(cls, PipelineOutput)

    def generate(self, args: CallArgs) -> PipelineOutput | tuple:
        """Run one call: check `args` in full (`call_plan.plan_call`), then generate with the adapters set when
        it starts (changes wait for it)."""
        plan = plan_call(self, self.task, args)
        try:
            with torch.no_grad(), self.adapter_lock.generating():
                images = self._run(plan)
        finally:
            self._after_call()
        return PipelineOutput(images=images) if plan.args.return_dict else (images, None)

    def _run(self, plan: CallPlan):
        args, device = plan.args, self.device
        embeddings = self._embeddings(plan)
        scheduler = copy.deepcopy(self.scheduler)  # schedulers keep per-call state (step index, history)
        timesteps = denoising.set_timesteps(scheduler, args.num_inference_steps, args.strength, device)
        latents, inpaint, masks = self._start(plan, scheduler, timesteps)
        job = denoising.DenoiseJob(
            unet=self.unet,
            scheduler=scheduler,
            timesteps=timesteps,
            latents=latents,
            embeddings=embeddings,
            guidance_scale=args.guidance_scale,
            guidance_rescale=args.guidance_rescale,
            generator=plan.generator,
            eta=args.eta,
            inpaint=inpaint,
            callback=args.callback_on_step_end,
            pipeline=self,
            progress=self._progress,
        )
        latents = denoising.denoise(job)
        if args.output_type == "latent":
            return latents
        networks = {"U-Net": self.unet, "text encoder": self.text_encoder}
        pixels = (denoising.decode_latents(self.vae, latents, networks).float() * 0.5 + 0.5).clamp(0, 1)
        if masks is not None and args.paste_back:
            pixels = image_inputs.paste_back(
                pixels, _expand(plan.images, plan.total), _expand(masks, plan.total)
            )
        return _convert(pixels, args.output_type)

    def _embeddings(self, plan: CallPlan) -> torch.Tensor:
        """The U-Net's text condition: [negative x n; prompt x n] with guidance, else [prompt x n]."""
        args, device, text_dtype = plan.args, self.device, self.text_encoder.dtype
        guided = args.guidance_scale > 1
        cond, uncond = encode_prompt(
            self.tokenizer,
            self.text_encoder,
            plan.prompts,
            plan.negative_prompts,
            _to(args.prompt_embeds, device, text_dtype),
            _to(args.negative_prompt_embeds, device, text_dtype),
            do_classifier_free_guidance=guided,
            clip_skip=args.clip_skip,
            device=device,
        )
        embeddings = torch.cat([uncond, cond]) if guided else cond
        return embeddings.repeat_interleave(args.num_images_per_prompt, dim=0).to(self.unet.dtype)

    def _start(self, plan: CallPlan, scheduler, timesteps: torch.Tensor):
        """(first latents, inpainting condition or None, blurred masks or None) of the call."""
        device, generator, total = self.device, plan.generator, plan.total
        factor, strength = self.vae_scale_factor, plan.args.strength
        shape = (total, self.vae.config.latent_channels, plan.height // factor, plan.width // factor)
        image_latents = None
        if plan.images is not None and (plan.masks is None or not self.components.is_inpaint or strength < 1):
            image_latents = denoising.encode_images(
                self.vae, plan.images * 2 - 1, total // len(plan.images), generator, device
            )
        # As diffusers: img2img always starts from the noised image, inpainting at strength 1 from pure noise.
        start_from_image = plan.images is not None and (plan.masks is None or strength < 1)
        latents, noise = denoising.prepare_latents(
            scheduler,
            shape,
            generator,
            device,
            self.unet.dtype,
            latents=plan.args.latents,
            image_latents=image_latents if start_from_image else None,
            timestep=timesteps[:1].repeat(total),
        )
        if plan.masks is None:
            return latents, None, None
        masks = image_inputs.blur_mask(plan.masks, plan.args.mask_blur)
        return latents, self._inpaint_condition(plan, masks, image_latents, noise, shape), masks

    def _inpaint_condition(
        self, plan: CallPlan, masks, image_latents, noise, shape
    ) -> denoising.InpaintCondition:
        """The mask at latent size and, for a 9-channel U-Net, the masked image's latents."""
        device, total = self.device, plan.total
        mask_latent = F.interpolate(masks, size=shape[-2:])  # nearest, as diffusers
        mask_latent = _expand(mask_latent, total).to(device=device, dtype=self.unet.dtype)
        if self.components.is_inpaint:
            masked = (plan.images * 2 - 1) * (masks < 0.5)
            masked_latents = denoising.encode_images(
                self.vae, masked, total // len(masked), plan.generator, device
            )
            return denoising.InpaintCondition(
                mask_latent, masked_image_latents=masked_latents.to(self.unet.dtype)
            )
        denoising.skip_posterior_sample(
            (len(plan.images), *shape[1:]), plan.generator, device, self.vae.dtype
        )
        return denoising.InpaintCondition(mask_latent, image_latents=image_latents, noise=noise)


def _to(tensor: torch.Tensor | None, device, dtype) -> torch.Tensor | None:
    return None if tensor is None else tensor.to(device=device, dtype=dtype)


def _expand(tensor: torch.Tensor, total: int) -> torch.Tensor:
    """(total, ...) from (1, ...) or (n, ...) with n dividing total: each row repeated total // n times."""
    return tensor.repeat_interleave(total // tensor.shape[0], dim=0)


def _convert(pixels: torch.Tensor, output_type: str):
    if output_type == "pt":
        return pixels
    if output_type == "np":
        return pixels.permute(0, 2, 3, 1).cpu().numpy()
    return to_pil(pixels)


class TextToImagePipeline(_Pipeline):
    """Text-to-image: `pipe(prompt, ...)`; default size `unet.sample_size * vae_scale_factor`."""

    task = "txt2img"


class ImageToImagePipeline(_Pipeline):
    """Image-to-image (SDEdit): `pipe(prompt, image, strength=0.8, ...)` runs int(steps x strength) steps."""

    task = "img2img"


class InpaintPipeline(_Pipeline):
    """Inpainting: `pipe(prompt, image, mask_image, ...)`, white = repaint; 4- or 9-channel U-Nets.

    `mask_blur` (pixels) softens the mask edge; soft (grey) masks blend; with `paste_back` the pixels where
    the (blurred) mask is 0 are the input's exactly.
    """

    task = "inpaint"


PIPELINES: dict[str, type[_Pipeline]] = {
    cls.task: cls for cls in (TextToImagePipeline, ImageToImagePipeline, InpaintPipeline)
}
