"""Settings of `latentforge eval`: one dataclass with working defaults; YAML files in `configs/eval/` hold
overrides, command-line flags and `key=value` pairs override those. Each task reads the fields it needs."""

from __future__ import annotations

from dataclasses import dataclass

TASKS = ("compositional", "inpainting", "emoji", "vae", "fid", "clip-score")


@dataclass
class EvalConfig:
    """What to evaluate, how to sample, and where to write the report."""

    model: str = (
        ""  # diffusers-layout model folder or single-file checkpoint; for `vae` also a bare VAE folder
    )
    dtype: str = "auto"  # weights precision: auto (float16 on CUDA, else float32), float32, float16, bfloat16
    # A single-file `model`: its architecture (configs/models/ name or folder) and prediction type where its keys
    # cannot tell, its EMA copy, and whether a .ckpt/.pt pickle may be opened (torch.load(weights_only=True))
    model_architecture: str = ""
    prediction_type: str = ""  # "" = the file's metadata, else the architecture's; epsilon or v_prediction
    use_ema: bool = False
    allow_pickle: bool = False
    output_dir: str = "eval"  # reports are written here as <task>.json, <task>.md, <task>.png
    overwrite: bool = False  # replace an existing report of the same task in output_dir
    seed: int = 0  # fixes the prompt set and the image seeds (image i uses seed + i)
    num_prompts: int = (
        50  # compositional: per category (and as many held-out); emoji/clip-score/inpainting: in all
    )
    images_per_prompt: int = 1  # compositional only (GenEval uses 4)
    num_images: int = 256  # fid: generated and reference images; vae: held-out images
    image_size: int = 64  # px of reference / held-out images (the shapes world is drawn at 64)
    # Sampling; unset = the model's generation_defaults.json, else latentforge.pipelines.sampling_defaults.FALLBACK
    # (the same settings `latentforge generate` uses)
    steps: int | None = None  # denoising steps
    guidance_scale: float | None = None  # classifier-free guidance scale
    guidance_rescale: float | None = None  # in [0, 1]; 0.7 suits zero-terminal-SNR models (Lin et al.)
    negative_prompt: str = ""  # for every image ("" = the unconditional branch sees the empty prompt)
    clip_skip: int | None = None  # skip the last N text-encoder layers (diffusers' convention)
    scheduler: str = ""  # sampler name from latentforge.pipelines.schedulers; "" = the model's own
    batch_size: int = 16  # images per pipeline call
    device: str = "auto"  # "auto" = cuda when available, else cpu
    clip: str = ""  # open_clip folder (open_clip_config.json + open_clip_model.safetensors)
    features: str = "auto"  # fid/kid feature space: auto (inception > clip > pixels), inception, clip, pixels
    emoji_skin_tones: bool = False  # emoji: include skin-tone variants in the gallery
