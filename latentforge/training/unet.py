"""Stage 3: the text-conditional U-Net of latent diffusion (Rombach et al. 2022), with the VAE frozen and
cached, and the text encoder cached too or trained alongside (`train_text_encoder`). From scratch (an
architecture) or fine-tuning a diffusers model; full or LoRA; epsilon or v prediction; zero terminal SNR
(Lin et al. 2024); min-SNR-gamma (Hang et al. 2023); noise offset; caption dropout to "" (the unconditional
branch of classifier-free guidance, Ho & Salimans 2022); EMA; inpainting U-Nets (2C + 1 input channels), also
widened from a text-to-image base (inpaint_variant); aspect-ratio buckets (data.buckets); DreamBooth with prior
preservation (dreambooth.*, `training.dreambooth`); LoRA on the text encoder too (lora.text_encoder); AdamW, 8-bit
AdamW, Adafactor or Prodigy (optim.name); sets too large to cache streamed from tar shards and encoded per batch
(data.shards, `training.unet_data`).

Exports `output_dir/model/` (a full diffusers folder) or, for LoRA, `output_dir/lora/`, with the training
settings in the safetensors headers (`training.training_metadata`).

    latentforge train unet --config shapes-small-unet [key=value ...]
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from diffusers import DDPMScheduler

from latentforge.data.training_data import make_buckets
from latentforge.models.component_files import component_folder, has_weights, load_text_encoder, load_vae
from latentforge.models.components import Components, inpaint_in_channels
from latentforge.resources import DEFAULT_MODEL, shipped_names
from latentforge.training import losses
from latentforge.training.dreambooth import (
    check_dreambooth,
)
from latentforge.training.inpaint_masks import inpaint_conditioning, random_masks, widen_to_inpaint
from latentforge.training.optimization import OptimizerUpdate, make_ema, make_optimizer
from latentforge.training.relation_words import RelationWordsLoss, check_relation_words
from latentforge.training.run import Backward, Trainer, TrainingRun, train_loop
from latentforge.training.shape_maps import ShapeMapLoss
from latentforge.training.stage_configs import UNetTrainConfig
from latentforge.training.token_grounding import TokenGroundingLoss
from latentforge.training.trained_models import trained_models, trains_text_encoder
from latentforge.training.unet_data import (
    UNetData,
    cached_data,
    check_scene_losses,
    check_streaming,
    scene_keys,
    streamed_data,
    uses_row_targets,
)
from latentforge.training.unet_export import export_unet_run
from latentforge.training.validation import log_validation_images

logger = logging.getLogger(__name__)


def _is_architecture(base: str) -> bool:
    """True for an architecture (config-only folder or name in configs/models), False for a trained model."""
    path = Path(base)
    if path.is_dir():
        return not has_weights(component_folder(path, "unet"))
    return not path.exists() and base in shipped_names("models")


def load_components(config: UNetTrainConfig) -> Components:
    """Base components, with the VAE / text encoder replaced by trained ones if given; checked to fit."""
    if _is_architecture(config.base):
        components = Components.from_architecture(config.base, seed=config.seed)
        for name, given in (("vae", config.vae_from), ("text_encoder", config.text_encoder_from)):
            if not given:
                logger.warning(
                    "%s: untrained (random) %s from the architecture; set %s_from", config.base, name, name
                )
    else:  # a trained model folder, "default" (the shipped model), or a hub id (fetched when a network exists)
        components = Components.from_pretrained(DEFAULT_MODEL if config.base == "default" else config.base)
    if config.vae_from:
        components.vae = load_vae(config.vae_from)
    if config.text_encoder_from:
        components.text_encoder, components.tokenizer = load_text_encoder(config.text_encoder_from)
    overrides = {"prediction_type": config.prediction_type} if config.prediction_type else {}
    if config.zero_terminal_snr:
        overrides |= {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing"}
        if "use_karras_sigmas" in components.scheduler.config:
            # Karras sigmas would start at sigma 4096 (the rescaled last step) and spend a third of the steps
            # above sigma 300, where every seed gives the same image; trailing timesteps drop to 40 at once.
            overrides["use_karras_sigmas"] = False
    if overrides:
        sched = components.scheduler
        components.scheduler = type(sched).from_config(sched.config, **overrides)
    if config.inpaint_variant:
        widen_to_inpaint(components.unet)
    _check_fit(components, config)
    components.vae.requires_grad_(False).eval()
    components.text_encoder.requires_grad_(config.train_text_encoder).train(config.train_text_encoder)
    return components


def check_config(config: UNetTrainConfig) -> None:
    """Settings that contradict each other, before anything is loaded."""
    if config.lora.rank and os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        raise ValueError(
            "LoRA under FSDP: the adapters are small enough to train unsharded, and their export does not "
            "gather shards; launch LoRA runs with configs/accelerate/ddp.yaml (or deepspeed-zero2.yaml)"
        )
    if config.train_text_encoder and config.lora.rank:
        raise ValueError(
            "train_text_encoder=true needs full training: with LoRA (lora.rank > 0) set lora.text_encoder=true "
            "for text-encoder adapters, or lora.rank=0 or train_text_encoder=false"
        )
    if config.text_encoder_lr < 0 or config.lora.text_encoder_lr < 0:
        raise ValueError("text_encoder_lr and lora.text_encoder_lr must be >= 0 (0 = optim.learning_rate)")
    if config.edge_weight < 0 or config.edge_threshold <= 0 or config.edge_max_timestep < 0:
        raise ValueError(
            f"edge_weight must be >= 0 (0 = off), edge_threshold > 0 and edge_max_timestep >= 0 (0 = every "
            f"timestep), got edge_weight={config.edge_weight}, edge_threshold={config.edge_threshold}, "
            f"edge_max_timestep={config.edge_max_timestep}"
        )
    if config.edge_predicted and not config.edge_weight:
        raise ValueError("edge_predicted=true weighs outlines by edge_weight: set edge_weight > 0 (e.g. 64)")
    check_scene_losses(config)
    check_relation_words(config)
    if config.inpaint_variant and config.lora.rank:
        raise ValueError(
            "inpaint_variant=true needs full training: LoRA adapters would leave the new mask and masked-image "
            "input weights at zero; set lora.rank=0"
        )
    if config.lora.text_encoder and not config.lora.rank:
        raise ValueError(
            "lora.text_encoder=true adds adapters to the text encoder and needs lora.rank > 0; for full training "
            "of the text encoder set train_text_encoder=true instead"
        )
    losses.check_timestep_sampling(config.timestep_sampling, config.logit_std)
    check_dreambooth(config.dreambooth)
    if config.data.shards:
        check_streaming(config)


def _check_fit(c: Components, config: UNetTrainConfig) -> None:
    unet = c.unet.config
    if unet.cross_attention_dim != c.text_encoder.config.hidden_size:
        raise ValueError(
            f"text_encoder_from: its hidden size {c.text_encoder.config.hidden_size} does not match the U-Net's "
            f"cross_attention_dim {unet.cross_attention_dim} (base={config.base})"
        )
    if unet.out_channels != c.vae.config.latent_channels or unet.in_channels not in (
        unet.out_channels,
        inpaint_in_channels(unet.out_channels),
    ):
        raise ValueError(
            f"vae_from: {c.vae.config.latent_channels} latent channels do not fit a U-Net with in/out channels "
            f"{unet.in_channels}/{unet.out_channels}"
        )
    if config.data.resolution % c.vae_scale_factor:
        raise ValueError(f"data.resolution must be a multiple of the VAE factor {c.vae_scale_factor}")
    if config.data.buckets or config.data.max_upscale:
        make_buckets(config.data, c.vae_scale_factor)
    pt = c.scheduler.config.get("prediction_type", "epsilon")
    if pt not in ("epsilon", "v_prediction"):
        raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {pt!r}")
    if c.scheduler.config.get("rescale_betas_zero_snr") and pt != "v_prediction":
        raise ValueError(
            "zero terminal SNR (rescale_betas_zero_snr) needs v-prediction: at the last step the noise is the "
            f"whole input, so an epsilon model ({pt}) learns nothing there; set prediction_type=v_prediction"
        )


def diffusion_loss(
    unet, components: Components, noise_scheduler, batch, config: UNetTrainConfig
) -> torch.Tensor:
    """One training loss: noise the latents at random timesteps, predict, weighted MSE (scalar)."""
    latents, embeds, pixels = batch
    noise = torch.randn_like(latents)
    if config.noise_offset:
        noise = noise + config.noise_offset * torch.randn(*latents.shape[:2], 1, 1, device=latents.device)
    t = losses.sample_timesteps(
        latents.shape[0],
        noise_scheduler.config.num_train_timesteps,
        config.timestep_sampling,
        config.logit_mean,
        config.logit_std,
        latents.device,
    )
    noisy = noise_scheduler.add_noise(latents, noise, t)
    model_input = noisy
    if components.is_inpaint:
        masks = random_masks(len(t), *pixels.shape[-2:], config.inpaint_full_mask_fraction, latents.device)
        cond = inpaint_conditioning(components.vae, pixels, masks, components.vae_scale_factor)
        model_input = torch.cat([model_input, cond], dim=1)
    pred = unet(model_input, t, embeds).sample
    alphas = noise_scheduler.alphas_cumprod.to(latents.device)[t]
    prediction_type = noise_scheduler.config.prediction_type
    target = losses.diffusion_target(latents, noise, alphas, prediction_type)
    weights = (
        losses.min_snr_weights(losses.snr(alphas), config.snr_gamma, prediction_type)
        if config.snr_gamma
        else None
    )
    cells = None
    if config.edge_weight:
        predicted = (
            losses.predicted_sample(noisy, pred, alphas, prediction_type) if config.edge_predicted else None
        )
        cells = losses.edge_cell_weights(
            latents, t, config.edge_weight, config.edge_threshold, config.edge_max_timestep, predicted
        )
    return losses.weighted_mse(pred, target, weights, cells)


def train(config: UNetTrainConfig) -> Path:
    """Train and export; returns `output_dir/model` (or `output_dir/lora` for LoRA)."""
    check_config(config)
    run = TrainingRun(config, "unet")
    accelerator = run.accelerator
    components = load_components(config).to(accelerator.device)
    data = (
        streamed_data(accelerator, components, config)
        if config.data.shards
        else cached_data(components, config, run)
    )
    models, groups = trained_models(components, config)
    heads = {}  # the auxiliary losses' heads: they train with the U-Net, in its checkpoints, not in the export
    if config.shape_map_weight:
        heads["shape_map"] = ShapeMapLoss(
            components.unet, config.shape_map_layer, data.shape_targets, config.shape_map_centers
        )
    if config.relation_words_weight:
        hidden = components.text_encoder.config.hidden_size
        heads["relation_words"] = RelationWordsLoss(hidden, *data.relation_targets)
    for head in heads.values():
        models.append(head.head.to(accelerator.device))
        groups.append({"params": list(head.head.parameters())})
    grounding = None
    if config.token_grounding_weight:  # before `prepare`: its processors keep the cross-attention
        grounding = TokenGroundingLoss(components.unet, config.token_grounding_layers, *data.phrase_targets)
    trainable = [p for group in groups for p in group["params"]]
    optimizer, scheduler = make_optimizer(groups, config.optim)
    # a shard loader is not a DataLoader: prepare hands it back as it is (it splits the shards itself)
    *prepared, optimizer, loader = accelerator.prepare(*models, optimizer, data.loader)
    ema = make_ema(trainable, config.ema)
    run.checkpoints.register(scheduler, ema)
    run.resume(len(loader))
    trainer = Trainer(
        train_step=_train_step(prepared, components, data, config, heads, grounding),
        updates=[OptimizerUpdate(optimizer, scheduler, trainable, ema)],
        prepared=prepared,
        saved=models,
        validate=lambda step: log_validation_images(
            accelerator, components, config.validation, data.size, run.dir.validation, step
        ),
    )
    train_loop(run, loader, trainer)  # ends with the EMA weights in the models
    summary = {**run.finish(trainable), **data.summary}
    out = export_unet_run(accelerator, components, config, run, summary, data.images)
    run.close()
    return out


def _train_step(
    prepared: list,
    components: Components,
    data: UNetData,
    config: UNetTrainConfig,
    heads: dict | None = None,
    grounding: TokenGroundingLoss | None = None,
):
    """One micro-batch -> the diffusion loss through `backward`; {"loss"}. With DreamBooth's prior
    preservation, as many class images beside it: loss = instance + prior_loss_weight * prior. With the
    auxiliary losses (`heads`: "shape_map", "relation_words"; `grounding`), loss = diffusion + shape_map_weight *
    shape map cross-entropy + relation_words_weight * relation cross-entropy + token_grounding_weight * token
    loss (each logged)."""
    model = prepared[0]
    text_model = prepared[1] if trains_text_encoder(config) else None
    noise_scheduler = DDPMScheduler.from_config(components.scheduler.config)  # the training noise schedule
    heads = heads or {}
    prepared_heads = dict(zip(heads, prepared[len(prepared) - len(heads) :], strict=True))

    def step(batch, backward: Backward) -> dict[str, torch.Tensor]:
        if grounding is not None or "relation_words" in heads:  # the losses leave out the dropped captions
            batch["caption_dropped"] = torch.rand(len(batch["index"])) < config.caption_dropout
        if uses_row_targets(config):  # drawn here: the losses' targets flip with the images
            batch["flip_variant"] = torch.randint(0, data.flip_variants, (len(batch["index"]),))
            keys = scene_keys(batch, data)
        inputs = data.inputs(batch, text_model)
        loss = diffusion_loss(model, components, noise_scheduler, inputs, config)
        terms = {}
        if "shape_map" in heads:
            shape_map_loss = heads["shape_map"].loss(keys, prepared_heads["shape_map"])
            terms["shape_map_loss"] = (config.shape_map_weight, shape_map_loss)
        if "relation_words" in heads:
            relation = heads["relation_words"].loss(
                keys, inputs[1], batch["caption_dropped"], prepared_heads["relation_words"]
            )
            terms["relation_words_loss"] = (config.relation_words_weight, relation)
        if grounding is not None:
            grounded = grounding.loss(keys, batch["caption_dropped"])
            terms["token_grounding_loss"] = (config.token_grounding_weight, grounded)
        if terms:
            total = loss + sum(weight * term for weight, term in terms.values())
            backward(total)
            logged = {name: term.detach() for name, (_, term) in terms.items()}
            return {"loss": total.detach(), "diffusion_loss": loss.detach(), **logged}
        if data.prior is None:
            backward(loss)
            return {"loss": loss.detach()}
        prior_inputs = data.prior(batch, text_model)
        prior = diffusion_loss(model, components, noise_scheduler, prior_inputs, config)
        total = loss + config.dreambooth.prior_loss_weight * prior
        backward(total)
        return {"loss": total.detach(), "instance_loss": loss.detach(), "prior_loss": prior.detach()}

    return step


CONFIG_CLASS = UNetTrainConfig
