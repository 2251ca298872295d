"""Memory and speed switches of a pipeline, the ones diffusers users expect.

They change the shared modules (attention processors, VAE modes, hooks, memory format), not per-call state,
so they apply to every pipeline that shares the modules through `from_pipe`. PyTorch's scaled-dot-product
attention (SDPA) is diffusers' default processor and needs no switch.
"""

from __future__ import annotations

import torch

from latentforge.pipelines import step_cache


class MemorySwitches:
    """Mixin for pipelines with `unet`, `vae` and `text_encoder` properties."""

    _offload_device: torch.device | None = None
    _offload_last_hook = None

    def enable_attention_slicing(self, slice_size: str | int = "auto") -> None:
        """Compute attention in slices ("auto": two per head, "max": one at a time, or an int slice size)."""
        self.unet.set_attention_slice(slice_size)

    def disable_attention_slicing(self) -> None:
        """Back to whole-head attention (SDPA)."""
        self.unet.set_attention_slice(None)

    def enable_vae_slicing(self) -> None:
        """Decode a batch one image at a time (less memory for large batches)."""
        self.vae.enable_slicing()

    def disable_vae_slicing(self) -> None:
        self.vae.disable_slicing()

    def enable_vae_tiling(self) -> None:
        """Encode and decode in overlapping tiles (large images in little memory; seams are blended)."""
        self.vae.enable_tiling()

    def disable_vae_tiling(self) -> None:
        self.vae.disable_tiling()

    def enable_model_cpu_offload(self, device: torch.device | str = "cuda") -> None:
        """Keep the models on the CPU and move each to `device` only while it runs (accelerate hooks).

        The order text encoder -> U-Net -> VAE is the order they run in; each hook offloads the previous
        model when the next one starts, so one model at a time occupies `device`.
        """
        from accelerate import cpu_offload_with_hook

        device = torch.device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                "enable_model_cpu_offload: device 'cuda' is not available; pass an available device"
            )
        hook = None
        for module in (self.text_encoder, self.unet, self.vae):
            module.to("cpu")
            _, hook = cpu_offload_with_hook(module, device, prev_module_hook=hook)
        self._offload_device = device
        self._offload_last_hook = hook  # offloads the VAE after each call

    def _after_call(self) -> None:
        if self._offload_last_hook is not None:
            self._offload_last_hook.offload()

    def enable_xformers(self) -> None:
        """Use xformers' memory-efficient attention (CUDA only, when the package is installed)."""
        if self.unet.device.type != "cuda":
            raise ValueError(
                f"enable_xformers: xformers runs on CUDA devices only, but the model is on {self.unet.device}; "
                "call .to('cuda') first (PyTorch SDPA is already used by default on every device)"
            )
        try:
            import xformers  # noqa: F401
        except ImportError as err:
            raise ValueError(
                "enable_xformers: the xformers package is not installed (pip install xformers)"
            ) from err
        self.unet.enable_xformers_memory_efficient_attention()
        self.vae.enable_xformers_memory_efficient_attention()

    enable_xformers_memory_efficient_attention = enable_xformers  # diffusers' name

    def enable_channels_last(self) -> None:
        """Store U-Net and VAE activations channels-last (faster convolutions on recent GPUs)."""
        self.unet.to(memory_format=torch.channels_last)
        self.vae.to(memory_format=torch.channels_last)

    channels_last = enable_channels_last

    def enable_step_cache(self, interval: int = 3, warmup: int = 0) -> None:
        """Run the whole U-Net every `interval` steps and only its shallowest branch in between (DeepCache),
        after `warmup` first steps that all run in full.

        The steps between full ones reuse the deep features of the last full step (see `step_cache`); about
        `interval` times fewer deep U-Net evaluations, at a small change of the image. Interval 1 keeps the
        images exactly. Each call keeps its own cache, so a pipeline still serves several threads.
        """
        step_cache.enable(self.unet, interval, warmup)

    def disable_step_cache(self) -> None:
        """Every step runs the whole U-Net again (the exact path)."""
        step_cache.disable(self.unet)

    def enable_fast(
        self,
        cache_interval: int = step_cache.FAST_SCHEDULE[0],
        cache_warmup: int = step_cache.FAST_SCHEDULE[1],
    ) -> None:
        """The fast preset: step caching (the first `cache_warmup` steps in full, then every `cache_interval`-th)
        and channels-last activations.

        Not the exact path: the images stay within `step_cache.MEAN_PIXEL_TOLERANCE` (mean absolute difference,
        pixels in [0, 1]) of the exact ones on the default model. At 20 steps the default schedule runs 7 full
        steps (0-3, 8, 13, 18), as many as interval 3 without warm-up, but front-loaded: the same speed with the
        compositional score kept (README "Speed"). `disable_fast` returns to the exact path.
        """
        self.enable_step_cache(cache_interval, cache_warmup)
        self.enable_channels_last()

    def disable_fast(self) -> None:
        self.disable_step_cache()
        self.unet.to(memory_format=torch.contiguous_format)
        self.vae.to(memory_format=torch.contiguous_format)

    def compile(self, mode: str | None = "reduce-overhead", fullgraph: bool = False) -> None:
        """Compile the U-Net with `torch.compile` in place (first call slow; recompiles for new sizes)."""
        self.unet.compile(mode=mode, fullgraph=fullgraph)
