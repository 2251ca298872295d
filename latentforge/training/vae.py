"""Stage 1: train the KL autoencoder (`AutoencoderKL`) as in latent diffusion (Rombach et al. 2022, §3 and
appendix G): L1/L2 reconstruction + KL + a PatchGAN discriminator with hinge loss and the adaptive weight of
taming-transformers, switched on after `disc_start` steps (optionally an edge weighting and a scale-equivariance
term, `loss.edge_weight` and `loss.scale_equivariance_weight`). No LPIPS term: its weights are not available
offline. Exports `output_dir/model/vae/` with `scaling_factor = 1 / std(latents)` measured on training data.

    latentforge train vae --config shapes-small-vae [key=value ...]
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from latentforge.atomic_files import staged_folder
from latentforge.data.training_data import data_note, image_loader, load_splits
from latentforge.image_metrics import psnr, ssim
from latentforge.imaging import make_grid, to_pil
from latentforge.models.component_files import component_folder, has_weights, load_vae
from latentforge.models.components import vae_scale_factor
from latentforge.training import losses
from latentforge.training.model_card import write_model_card
from latentforge.training.optimization import OptimizerUpdate, make_ema, make_optimizer
from latentforge.training.run import Backward, Trainer, TrainingRun, train_loop
from latentforge.training.stage_configs import VAELossConfig, VAETrainConfig
from latentforge.training.vae_networks import AutoencoderWithPosterior, PatchDiscriminator, downsample


def train(config: VAETrainConfig) -> Path:
    """Train, evaluate (held-out PSNR/SSIM and a reconstruction grid every validation.every_steps) and export;
    returns the exported `output_dir/model` folder."""
    run = TrainingRun(config, "vae")
    accelerator = run.accelerator
    vae = load_vae(config.model, seed=config.seed)
    _prepare_start(vae, config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed + 1)
        disc = PatchDiscriminator(vae.config.out_channels, config.loss.disc_channels, config.loss.disc_layers)
    train_data, held_out = load_splits(config.data)
    loader = image_loader(train_data, config.data, config.optim.batch_size, shuffle=True)
    trained = _trained(vae)
    opt_g, sched_g = make_optimizer(trained, config.optim)
    disc_lr = config.loss.disc_learning_rate or config.optim.learning_rate
    opt_d, sched_d = make_optimizer(
        disc.parameters(), dataclasses.replace(config.optim, learning_rate=disc_lr)
    )
    autoencoder, disc, opt_g, opt_d, loader = accelerator.prepare(
        AutoencoderWithPosterior(vae), disc, opt_g, opt_d, loader
    )
    ema = make_ema(trained, config.ema)
    run.checkpoints.register(sched_g, sched_d, ema)
    run.resume(len(loader))
    trainer = Trainer(
        train_step=_train_step(run, autoencoder, disc, vae, config.loss),
        updates=[
            OptimizerUpdate(opt_g, sched_g, trained, ema),
            OptimizerUpdate(
                opt_d, sched_d, list(disc.parameters()), active=lambda step: step >= config.loss.disc_start
            ),
        ],
        prepared=[autoencoder, disc],
        saved=[vae],
        validate=lambda step: _validate(accelerator, vae, held_out, config, run, step),
    )
    metrics = train_loop(run, loader, trainer)  # ends with the EMA weights in the VAE
    summary = run.finish(vae.parameters())
    out = _export(accelerator, vae, train_data, config, run, {**metrics, **summary})
    run.close()
    return out


def _train_step(run: TrainingRun, autoencoder, disc, vae, lc: VAELossConfig):
    """One micro-batch: the autoencoder's loss, then (from disc_start on) the discriminator's, each through
    `backward`; the scalars to log."""
    raw_disc = run.accelerator.unwrap_model(disc)
    last_layer = vae.decoder.conv_out.weight  # the adaptive weight balances gradients at this layer

    def step(batch, backward: Backward) -> dict[str, float | torch.Tensor]:
        images = batch["pixel_values"]
        disc_on = run.step >= lc.disc_start
        recon, loss_g, logs = _generator_loss(autoencoder, raw_disc, last_layer, images, lc, disc_on)
        backward(loss_g)
        if disc_on:
            loss_d = losses.hinge_d_loss(disc(images), disc(recon.detach()))
            logs["d_loss"] = loss_d.item()
            backward(loss_d)
        return {**logs, "loss": loss_g.detach()}

    return step


def _prepare_start(vae, config: VAETrainConfig) -> None:
    """Check the loss fits the VAE; freeze the encoder (decoder-only fine-tuning) or set a fresh VAE's starting
    posterior noise."""
    latent_side = config.data.resolution // vae_scale_factor(vae)
    if config.loss.scale_equivariance_weight < 0:
        raise ValueError(
            f"loss.scale_equivariance_weight must be >= 0 (0 = off), got {config.loss.scale_equivariance_weight}"
        )
    if config.loss.scale_equivariance_weight and latent_side % 4:
        raise ValueError(
            f"loss.scale_equivariance_weight downsamples the latents 2x and 4x, but data.resolution="
            f"{config.data.resolution} gives {latent_side}x{latent_side} latents with this VAE; use a "
            "resolution whose latents divide by 4, or set loss.scale_equivariance_weight=0"
        )
    if not config.train_encoder:
        _freeze_encoder(vae, config.model)
    elif config.init_logvar and not has_weights(component_folder(config.model, "vae")):
        init_posterior_logvar(vae, config.init_logvar)


def init_posterior_logvar(vae, value: float) -> None:
    """Start a fresh VAE's posterior log-variance near `value` (quant_conv's second half of outputs): with the
    default 0 the samples carry unit noise before the encoder has learned any scale, which slows early training."""
    with torch.no_grad():
        vae.quant_conv.bias[vae.config.latent_channels :] = value


def _freeze_encoder(vae, source: str) -> None:
    """Decoder-only fine-tuning (as for SD's ft-MSE VAE): the encoder and quant_conv keep their weights, so the
    latents a U-Net was trained on do not change; needs a trained VAE to start from."""
    if not has_weights(component_folder(source, "vae")):
        raise ValueError(
            f"train_encoder=false keeps the encoder as loaded, but model={source} has no trained weights; "
            "point model= at a trained VAE (a model folder or its vae/ folder)"
        )
    vae.encoder.requires_grad_(False)
    if vae.quant_conv is not None:
        vae.quant_conv.requires_grad_(False)


def _generator_loss(autoencoder, raw_disc, last_layer, images, lc: VAELossConfig, disc_on: bool):
    """(reconstruction, loss, scalars): rec + kl_weight * KL (+ adaptive-weighted hinge G loss once on)."""
    factor = 2 ** int(torch.randint(1, 3, ())) if lc.scale_equivariance_weight else 1  # 2x or 4x
    recon, mean, logvar, small = autoencoder(images, factor)
    rec = losses.reconstruction_loss(images, recon, lc.rec_loss, lc.edge_weight)
    # KL summed over the latent, divided by the pixel values per image: LDM's weight was for a summed rec loss
    kl = losses.kl_divergence(mean, logvar).mean() / images[0].numel()
    loss = rec + lc.kl_weight * kl
    logs = {"rec": rec.item(), "kl": kl.item()}
    if small is not None:
        scale_eq = losses.reconstruction_loss(downsample(images, factor), small, lc.rec_loss, lc.edge_weight)
        loss = loss + lc.scale_equivariance_weight * scale_eq
        logs["scale_eq"] = scale_eq.item()
    if disc_on:
        raw_disc.requires_grad_(False)  # G's loss must not leave gradients on D
        g_loss = losses.hinge_g_loss(raw_disc(recon))
        d_weight = losses.adaptive_disc_weight(rec, g_loss, last_layer) * lc.disc_weight
        raw_disc.requires_grad_(True)
        loss = loss + d_weight * g_loss
        logs.update(g_loss=g_loss.item(), d_weight=d_weight.item())
    return recon, loss, logs


def _trained(vae) -> list[torch.nn.Parameter]:
    """The parameters the optimizer and the EMA follow: the decoder side alone when train_encoder=false."""
    return [p for p in vae.parameters() if p.requires_grad]


@torch.no_grad()
def _validate(
    accelerator: Accelerator, vae, held_out, config: VAETrainConfig, run: TrainingRun, step: int
) -> dict[str, float]:
    """Held-out PSNR/SSIM of posterior-mode reconstructions and a grid of the first batch (originals above
    reconstructions) as validation/step-<step>.png; main process only."""
    metrics: dict[str, float] = {}
    if accelerator.is_main_process and len(held_out):
        vae.eval()
        psnrs, ssims, first = [], [], None
        for batch in image_loader(held_out, config.data, config.optim.batch_size, shuffle=False, flip=False):
            images = batch["pixel_values"].to(accelerator.device)
            recon = vae.decode(vae.encode(images).latent_dist.mode()).sample.clamp(-1, 1)
            psnrs.append(psnr((images + 1) / 2, (recon + 1) / 2))
            ssims.append(ssim((images + 1) / 2, (recon + 1) / 2))
            first = first if first is not None else torch.cat([images[:8], recon[:8]])
        vae.train()
        metrics = {
            "held_out_psnr": torch.cat(psnrs).mean().item(),
            "held_out_ssim": torch.cat(ssims).mean().item(),
        }
        accelerator.log(metrics, step=step)
        if first is not None:
            run.dir.validation.mkdir(parents=True, exist_ok=True)
            grid = make_grid(to_pil((first + 1) / 2), columns=max(1, len(first) // 2))
            grid.save(run.dir.validation / f"step-{step}.png")
        tqdm.write(  # above the progress bar, not glued onto it
            f"step {step}: held-out PSNR {metrics['held_out_psnr']:.2f} dB, SSIM {metrics['held_out_ssim']:.4f}"
        )
    accelerator.wait_for_everyone()
    return metrics


@torch.no_grad()
def measure_latent_std(vae, loader, max_samples: int, device: torch.device) -> float:
    """Std of posterior samples over up to `max_samples` images: LDM's `scale_by_std` (appendix D.1 / G)."""
    values, seen = [], 0
    for batch in loader:
        images = batch["pixel_values"].to(device)
        values.append(vae.encode(images).latent_dist.sample().float().flatten().cpu())
        seen += images.shape[0]
        if seen >= max_samples:
            break
    return torch.cat(values).std().item()


def _export(
    accelerator: Accelerator, vae, train_data, config: VAETrainConfig, run: TrainingRun, metrics: dict
) -> Path:
    """Write `output_dir/model/vae/` (the weights as trained, EMA if on; measured scaling_factor) and a
    model card."""
    model_dir = run.dir.model
    if accelerator.is_main_process:
        vae.eval()
        if config.train_encoder:
            loader = image_loader(train_data, config.data, config.optim.batch_size, shuffle=False, flip=False)
            std = measure_latent_std(vae, loader, config.scale_samples, accelerator.device)
            vae.register_to_config(scaling_factor=1.0 / std)
        else:  # same encoder, same latents: the scale a U-Net was trained with must not move
            std = 1.0 / vae.config.scaling_factor
        metrics = {**metrics, "latent_std": std, "scaling_factor": 1.0 / std}
        with staged_folder(model_dir) as staging:  # whole or absent (a kill or a full disk keeps the old one)
            vae.save_pretrained(staging / "vae", safe_serialization=True)
            write_model_card(
                staging,
                "latentforge VAE (AutoencoderKL)",
                run.dir.config,
                data_note(config.data, len(train_data)),
                metrics,
            )
            (staging / "vae_metrics.json").write_text(json.dumps(metrics, indent=2))
        accelerator.print(f"exported {model_dir / 'vae'} (scaling_factor {vae.config.scaling_factor:.5f})")
    accelerator.wait_for_everyone()
    return model_dir


CONFIG_CLASS = VAETrainConfig
