"""Write a copy of a model's VAE whose latents are standardized per channel (an ablation of the latent space).

The shapes-world VAE's latents have unit variance overall but per-channel standard deviations from 0.26 to
1.77, and most of a channel's variance is the background colour, not the shapes. This script measures the
per-channel mean and std on built-in shapes scenes (the training distribution), folds z -> (z - mean) / std
into the VAE's quant_conv/post_quant_conv (`latentforge.models.latent_channels`; images encode and decode as
before, stock diffusers still loads it) and writes OUT/vae/ plus the statistics, for a U-Net row:

    python benchmarks/standardize_vae.py runs/default-model/vae-decoder/model runs/vae-standardized
    python benchmarks/ablation.py c16-standardized --architecture small-c16 --max-steps 1500 --num-prompts 10 \\
        vae_from=runs/vae-standardized text_encoder_from= train_text_encoder=true
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="model folder with vae/ (or a vae/ folder)")
    parser.add_argument("output", help="folder to write vae/ into (must not exist)")
    parser.add_argument("--num-scenes", type=int, default=1024, help="shapes scenes to measure on")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.output)
    if out.exists():
        raise SystemExit(f"{out} exists; choose a new folder (nothing is overwritten)")

    from diffusers import AutoencoderKL

    from latentforge.data.shapes import render_scene, sample_scene
    from latentforge.imaging import pil_to_tensor
    from latentforge.models.component_files import component_folder
    from latentforge.models.latent_channels import standardize_latent_channels

    vae = AutoencoderKL.from_pretrained(component_folder(args.model, "vae")).eval()
    size = vae.config.sample_size
    rng = random.Random(args.seed)
    images = (
        pil_to_tensor([render_scene(sample_scene(rng, size=size)) for _ in range(args.num_scenes)]) * 2 - 1
    )
    stats = standardize_latent_channels(vae, images)
    vae.save_pretrained(out / "vae", safe_serialization=True)
    (out / "vae" / "latent_channels.json").write_text(json.dumps({"source": args.model, **stats}, indent=1))
    print("per-channel std before:", " ".join(f"{s:.2f}" for s in stats["std"]))
    print(f"wrote {out / 'vae'} (scaling_factor 1.0)")


if __name__ == "__main__":
    main()
