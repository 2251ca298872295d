"""The settings of the three training stages, one dataclass each (`STAGE_CONFIGS`), with their groups.

Kept apart from the trainers and free of torch, so that `latentforge train` reads and checks a config file
and its KEY=VALUE overrides (unknown keys, wrong types, missing folders) before torch is imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from latentforge.data.data_config import DataConfig
from latentforge.training.train_config import OptimConfig, TrainConfig, ValidationConfig


@dataclass
class LoRAConfig:
    """Low-rank adapters instead of full fine-tuning (rank 0 = train the whole U-Net)."""

    rank: int = 0  # adapter rank r; 0 = full training
    alpha: float = 0.0  # scale numerator (update = alpha / r * B A); 0 = rank (scale 1)
    target_modules: list[str] = field(
        default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"]
    )  # adapted layers
    text_encoder: bool = (
        False  # adapters on the CLIP text encoder too (same rank and alpha), as kohya's default
    )
    text_encoder_lr: float = 0.0  # their learning rate; 0 = optim.learning_rate (kohya: --text_encoder_lr)
    text_encoder_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "out_proj"]
    )  # adapted text-encoder layers (diffusers' DreamBooth-LoRA script's)


@dataclass
class DreamBoothConfig:
    """The subject's photos and prompt, and prior preservation (off while instance_data is "")."""

    instance_data: str = ""  # folder of photos of the subject; "" = no DreamBooth (train on `data`)
    instance_prompt: str = ""  # every instance photo's caption, with a rare token: "a photo of sks cat"
    class_prompt: str = ""  # the class without the token: "a photo of a cat"; "" = no prior preservation
    class_data: str = ""  # folder of class images; "" = output_dir/class_images; missing ones are generated
    num_class_images: int = (
        100  # class images used (diffusers' default 100; ~ 200 per instance photo in the paper)
    )
    prior_loss_weight: float = 1.0  # weight of the class images' loss (0 = no prior preservation)
    class_inference_steps: int = 25  # sampler steps per generated class image (the base model's scheduler)
    class_guidance_scale: float = 7.5  # classifier-free guidance of the generated class images


@dataclass
class PromptValidationConfig(ValidationConfig):
    """Images from fixed prompts/seeds every `every_steps`, to watch a run (EMA weights when EMA is on)."""

    prompts: list[str] = field(
        default_factory=lambda: [
            "a red circle",
            "two blue squares",
            "a yellow triangle to the left of a green star",
            "a purple star on a white background",
        ]
    )  # one image per prompt
    seed: int = 0  # image i uses seed + i
    num_inference_steps: int = 20  # sampler steps (the model's own scheduler)
    guidance_scale: float = 5.0  # classifier-free guidance scale


@dataclass
class VAELossConfig:
    """Weights of the autoencoder loss terms (LDM's LPIPSWithDiscriminator, minus LPIPS)."""

    rec_loss: Literal["l1", "l2"] = "l1"  # pixel reconstruction loss
    edge_weight: float = 0.0  # pixels on an image edge weigh 1 + this in the rec loss (losses.edge_mask)
    kl_weight: float = 1e-6  # LDM's weight, relative to a pixel-SUMMED loss (we divide KL by 3*H*W to match)
    disc_weight: float = 0.5  # scale of the adaptive adversarial weight
    disc_start: int = 2000  # optimizer step at which the discriminator switches on (LDM: 50001)
    disc_layers: int = 3  # PatchGAN depth (3 = the 70x70 PatchGAN of pix2pix)
    disc_channels: int = 64  # width of the first discriminator layer
    disc_learning_rate: float = 0.0  # discriminator LR (0 = same as optim.learning_rate)
    # scale equivariance (Skorokhodov et al. 2025, "Improving the Diffusability of Autoencoders"): each step
    # the latents downsampled 2x or 4x must decode to the image downsampled alike, with this weight on that
    # reconstruction loss; it keeps high frequencies out of the latents (0 = off)
    scale_equivariance_weight: float = 0.0


@dataclass
class VAETrainConfig(TrainConfig):
    """`latentforge train vae`: what to train, on what, and how."""

    output_dir: str = "runs/vae"  # checkpoints/, logs/, validation/, model/vae/ go here
    model: str = (
        "small"  # architecture (name or folder: random init) or a model/vae folder with weights (fine-tune)
    )
    data: DataConfig = field(
        default_factory=lambda: DataConfig(held_out_fraction=0.02)
    )  # images (captions unused)
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(
            learning_rate=1e-4, adam_beta1=0.5, adam_beta2=0.9, weight_decay=0.0
        )
    )  # LDM: Adam(0.5, 0.9), lr 4.5e-6 * batch
    loss: VAELossConfig = field(default_factory=VAELossConfig)  # loss terms
    init_logvar: float = (
        0.0  # from scratch: start the posterior log-variance here (e.g. -6: little noise at first)
    )
    train_encoder: bool = (
        True  # false: fine-tune the decoder only (model= a trained VAE); latents stay the same
    )
    scale_samples: int = 1024  # training images encoded to measure std(latents) for scaling_factor


@dataclass
class VisionConfig:
    """The ViT image tower (open_clip CLIPVisionCfg); its image size is data.resolution."""

    width: int = 192  # transformer width
    layers: int = 4  # transformer blocks
    head_width: int = 64  # width per attention head (heads = width / head_width)
    patch_size: int = 8  # pixels per patch side (64 px -> 8x8 patches)
    mlp_ratio: float = 4.0  # MLP hidden = mlp_ratio * width


@dataclass
class CLIPTrainConfig(TrainConfig):
    """`latentforge train clip`: text tower shaped like `architecture`'s text encoder, a small ViT."""

    output_dir: str = "runs/clip"  # checkpoints/, logs/, model/ go here
    architecture: str = (
        "small"  # the text tower copies architecture/text_encoder/config.json (+ its tokenizer)
    )
    vision: VisionConfig = field(default_factory=VisionConfig)  # image tower
    data: DataConfig = field(
        default_factory=lambda: DataConfig(held_out_fraction=0.05)
    )  # image/caption pairs
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(
            learning_rate=5e-4,
            adam_beta2=0.98,
            adam_epsilon=1e-6,
            weight_decay=0.2,
            batch_size=128,
            lr_scheduler="cosine",
            warmup_steps=100,
            max_steps=2000,
        )
    )  # open_clip's defaults: AdamW(0.9, 0.98, eps 1e-6), wd 0.2 (not on gains/biases), cosine


@dataclass
class UNetTrainConfig(TrainConfig):
    """`latentforge train unet`: the U-Net on cached latents of a frozen VAE and text encoder."""

    output_dir: str = "runs/unet"  # checkpoints/, logs/, cache/, validation/, model/ (or lora/) go here
    base: str = (
        "small"  # architecture name/folder (random U-Net), a diffusers model folder (fine-tune) or "default"
    )
    vae_from: str = ""  # model folder (or vae/ folder) of the trained VAE; "" = the base's own
    text_encoder_from: str = ""  # model folder with trained text_encoder/ + tokenizer/; "" = the base's own
    prediction_type: str = ""  # "" = the base scheduler's; "epsilon" or "v_prediction" (saved in the export)
    # Rescale the noise schedule so its last step is pure noise (Lin et al. 2024, "Common Diffusion Noise
    # Schedules and Sample Steps are Flawed"): with SD's schedule the last step keeps 7% of the image, so the
    # model learns to read an image's overall colour from the noise and ignores the prompt's. Needs
    # prediction_type=v_prediction; the export's scheduler gets rescale_betas_zero_snr and trailing timesteps.
    zero_terminal_snr: bool = False
    snr_gamma: float = 5.0  # min-SNR-gamma loss weighting (0 = plain MSE)
    # How timesteps are drawn: "uniform" (DDPM, every step equally often) or "logit_normal" (SD3: t / T =
    # sigmoid(N(logit_mean, logit_std)), more samples mid-schedule where shapes and layout are decided).
    timestep_sampling: str = "uniform"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    noise_offset: float = 0.0  # adds offset * N(0, 1) per sample and channel to the noise (0 = off)
    # Latent cells on an object's outline weigh 1 + edge_weight in the MSE (0 = off): cells where some channel
    # of the clean latents spans more than edge_threshold (in units of the scaled latents) within the cell's
    # 3x3 neighbourhood (`losses.edge_mask`, as the VAE's edge weighting does on pixels). Outlines are a few
    # cells of a mostly flat latent, so a plain mean spends most of the loss on backgrounds and interiors.
    edge_weight: float = 0.0
    edge_threshold: float = 1.5
    # The outline weighting applies to timesteps below this one only (0 = every timestep). At the noisiest
    # steps, where the layout and the number of objects are decided, it makes a spurious object on the
    # background cheap (background cells weigh 1 against 1 + edge_weight); below, the outlines are drawn.
    edge_max_timestep: int = 0
    # Also weigh the outline cells of the model's own clean prediction (x0 from its output, detached): a blob
    # the model draws on the background then costs as much as a missed outline, not the background's 1.
    edge_predicted: bool = False
    # Built-in shapes data only: a small head predicts from the U-Net's features at shape_map_layer which shape
    # (or the background) covers each latent cell of the clean image, and its cross-entropy times this weight
    # joins the loss (0 = off; `training.shape_maps`): the features must tell the shapes apart, not only the
    # colours. The head is not exported.
    shape_map_weight: float = 0.0
    shape_map_layer: str = "down_blocks.1.attentions.1"
    # With shape_map_weight: the head also predicts a heatmap of the objects' centres, whose binary
    # cross-entropy times this weight joins the shape map's loss (0 = off): the count of objects must show too.
    shape_map_centers: float = 0.0
    # Built-in shapes data only: the cross-attention of each object phrase's words (colour, shape) in the layers
    # under the comma-separated name prefixes token_grounding_layers must fall on that phrase's objects, the
    # token loss of TokenCompose times this weight (0 = off; `training.token_grounding`).
    token_grounding_weight: float = 0.0
    token_grounding_layers: str = "mid_block,up_blocks"
    # With token_grounding_weight: a caption's relation word ('left', 'right', 'above', 'below') grounds on the
    # first object's cells too, the first word that can know where that object goes (a causal text encoder).
    token_grounding_relation: bool = False
    # Captions that name a relation ('to the left of', 'to the right of', 'above', 'below'): a linear head on
    # the text encoder's hidden states must name it from every token from the relation word on, its
    # cross-entropy times this weight joins the loss (0 = off; needs train_text_encoder=true;
    # `training.relation_words`): a text encoder trained with the U-Net otherwise leaves left and right alike.
    relation_words_weight: float = 0.0
    caption_dropout: float = 0.1  # fraction of captions replaced by "" (needed for classifier-free guidance)
    # Train the text encoder with the U-Net (full training only), as kohya's and diffusers' DreamBooth
    # scripts can: the diffusion loss then also separates words the text encoder's own training left close.
    train_text_encoder: bool = False
    text_encoder_lr: float = 0.0  # its learning rate; 0 = optim.learning_rate (same warm-up and schedule)
    inpaint_full_mask_fraction: float = 0.25  # inpainting U-Nets: fraction of masks covering everything
    # Widen the base's text-to-image U-Net into an inpainting one (2C + 1 input channels, the new weights zero:
    # how SD's inpainting model was made from SD) and train it on masked images; the export inpaints.
    inpaint_variant: bool = False
    gradient_checkpointing: bool = False  # trade compute for activation memory
    cache_dtype: str = (
        "float16"  # storage of cached latents/embeddings: float16 halves RAM/disk, float32 exact
    )
    data: DataConfig = field(default_factory=lambda: DataConfig(held_out_fraction=0.0))  # image/caption pairs
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(learning_rate=1e-4, batch_size=32, warmup_steps=200)
    )  # SD: AdamW 1e-4 with warm-up; LoRA usually 1e-4, full fine-tunes 1e-5
    lora: LoRAConfig = field(default_factory=LoRAConfig)  # rank > 0 trains adapters only
    dreambooth: DreamBoothConfig = field(
        default_factory=DreamBoothConfig
    )  # a subject's photos, prior preservation
    validation: PromptValidationConfig = field(default_factory=PromptValidationConfig)  # images as it trains


STAGE_CONFIGS: dict[str, type[TrainConfig]] = {
    "vae": VAETrainConfig,
    "clip": CLIPTrainConfig,
    "unet": UNetTrainConfig,
}
