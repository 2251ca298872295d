"""Accelerate trainers for the three stages of a latent diffusion model: `vae`, `clip` (text encoder) and
`unet` (from scratch, fine-tuned or LoRA). Each module has a config dataclass and `train(config)`; the
`latentforge train` command loads the config from `configs/train/<name>.yaml` plus `key=value` overrides.

Not imported by `import latentforge` or the pipelines (it pulls in `datasets`, `peft` and accelerate).
"""
