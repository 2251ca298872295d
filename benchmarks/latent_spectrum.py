"""How much of a VAE's latent signal sits in fine detail: the spectral measure of latent "diffusability".

Diffusion removes fine detail first as noise rises and builds it last, so a latent space whose signal sits in
cell-to-cell patterns rather than in smooth spatial ones is harder to learn (Skorokhodov et al. 2025,
"Improving the Diffusability of Autoencoders"). For each model, built-in shapes scenes are encoded (posterior
modes, times scaling_factor) and each image's channels, less their own mean, split into a low-pass part (down
2x, bilinear with antialiasing, and back up) and the rest: *fine share* = energy of the rest / energy of the
whole, summed over channels and images. The same measure on the images shrunk to the latents' size
(antialiased) is the reference: what a latent space would give that were a smooth picture of the image.

    python benchmarks/latent_spectrum.py runs/default-model/vae-decoder/model runs/vae-ablations/scale-eq-16/train/model
"""

from __future__ import annotations

import argparse
import random

import torch
import torch.nn.functional as F

from latentforge.training.vae_networks import downsample


def fine_share(tensor: torch.Tensor) -> float:
    """(B, C, H, W) -> share of the within-image variance above half the Nyquist frequency (see the module)."""
    centred = tensor - tensor.mean(dim=(-2, -1), keepdim=True)
    smooth = F.interpolate(
        downsample(centred, 2), size=centred.shape[-2:], mode="bilinear", align_corners=False
    )
    return ((centred - smooth).square().sum() / centred.square().sum()).item()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help="model folders with vae/ (or vae/ folders)")
    parser.add_argument("--num-scenes", type=int, default=256, help="shapes scenes to encode")
    parser.add_argument(
        "--seed", type=int, default=1, help="seed of the scenes (the same scenes for every model)"
    )
    args = parser.parse_args(argv)

    from diffusers import AutoencoderKL

    from latentforge.data.shapes import render_scene, sample_scene
    from latentforge.imaging import pil_to_tensor
    from latentforge.models.component_files import component_folder

    images = None
    print("| model | latent shape | fine share of the latents | of the images at the latents' size |")
    print("|---|---|---|---|")
    for model in args.models:
        vae = AutoencoderKL.from_pretrained(component_folder(model, "vae")).eval()
        if images is None:
            rng = random.Random(args.seed)
            scenes = [
                render_scene(sample_scene(rng, size=vae.config.sample_size)) for _ in range(args.num_scenes)
            ]
            images = pil_to_tensor(scenes) * 2 - 1
        with torch.no_grad():
            latents = (
                torch.cat([vae.encode(batch).latent_dist.mode() for batch in images.split(64)])
                * vae.config.scaling_factor
            )
        shape = "x".join(str(n) for n in latents.shape[1:][::-1])
        shrunk = downsample(images, images.shape[-1] // latents.shape[-1])
        print(f"| {model} | {shape} | {fine_share(latents):.3f} | {fine_share(shrunk):.3f} |")


if __name__ == "__main__":
    main()
