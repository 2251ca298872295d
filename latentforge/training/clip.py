"""Stage 2: a small CLIP (Radford et al. 2021) trained contrastively with open_clip on the image/caption
pairs, whose text tower becomes the U-Net's text encoder. The text tower has exactly the shape of an
architecture's `text_encoder/config.json`, so the export is a drop-in `CLIPTextModel`.

Exports `output_dir/model/`: `text_encoder/` + `tokenizer/` (transformers), and `open_clip/` with
`open_clip_model.safetensors` + `open_clip_config.json` (the whole model, image tower included; load with
`open_clip.create_model_and_transforms("local-dir:<output_dir>/model/open_clip")`; its preprocessing
maps pixels to [-1, 1], the range the image tower was trained on).

    latentforge train clip --config shapes-small-clip [key=value ...]
"""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from safetensors.torch import save_file
from tqdm.auto import tqdm

from latentforge.atomic_files import staged_folder
from latentforge.data.training_data import data_note, image_loader, load_splits
from latentforge.models.openclip import open_clip_text_to_hf, open_clip_token_features
from latentforge.models.tokenizer import save_tokenizer, tokenize
from latentforge.resources import architecture_dir
from latentforge.training.clip_model import ShortTextCLIP, architecture_tokenizer, param_groups
from latentforge.training.model_card import write_model_card
from latentforge.training.optimization import OptimizerUpdate, make_ema, make_optimizer
from latentforge.training.run import Backward, Trainer, TrainingRun, train_loop
from latentforge.training.stage_configs import CLIPTrainConfig


def clip_model_config(config: CLIPTrainConfig) -> dict[str, Any]:
    """open_clip `CLIP(**cfg)` kwargs: text tower from the architecture's CLIPTextConfig, ViT from `vision`."""
    text = json.loads((architecture_dir(config.architecture) / "text_encoder" / "config.json").read_text())
    if text["hidden_act"] not in ("gelu", "quick_gelu"):
        raise ValueError(
            f"architecture text_encoder hidden_act must be gelu or quick_gelu, got {text['hidden_act']}"
        )
    v = config.vision
    return {
        "embed_dim": text["projection_dim"],
        "quick_gelu": text["hidden_act"] == "quick_gelu",
        "text_cfg": {
            "context_length": text["max_position_embeddings"],
            "vocab_size": text["vocab_size"],
            "width": text["hidden_size"],
            "heads": text["num_attention_heads"],
            "layers": text["num_hidden_layers"],
            "mlp_ratio": text["intermediate_size"] / text["hidden_size"],
        },
        "vision_cfg": {
            "image_size": config.data.resolution,
            "patch_size": v.patch_size,
            "width": v.width,
            "layers": v.layers,
            "head_width": v.head_width,
            "mlp_ratio": v.mlp_ratio,
        },
    }


def train(config: CLIPTrainConfig) -> Path:
    """Train, evaluate retrieval (every validation.every_steps and at the end) and export; returns the
    exported `output_dir/model` folder."""
    import open_clip  # third-party, imported when a CLIP is trained

    run = TrainingRun(config, "clip")
    accelerator = run.accelerator
    model_cfg = clip_model_config(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = open_clip.CLIP(**model_cfg)
    model.visual.image_mean = model.visual.image_std = (0.5, 0.5, 0.5)  # our pixels are in [-1, 1]
    tokenizer = architecture_tokenizer(config.architecture)
    train_data, held_out = load_splits(config.data)
    loader = image_loader(train_data, config.data, config.optim.batch_size, shuffle=True)
    optimizer, scheduler = make_optimizer(param_groups(model, config.optim.weight_decay), config.optim)
    model, optimizer, loader = accelerator.prepare(ShortTextCLIP(model), optimizer, loader)
    raw = accelerator.unwrap_model(model).model
    params = [p for p in raw.parameters() if p.requires_grad]
    ema = make_ema(params, config.ema)
    run.checkpoints.register(scheduler, ema)
    loss_fn = open_clip.ClipLoss(
        local_loss=True,  # each process scores its own rows against all gathered features
        gather_with_grad=True,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
    )
    run.resume(len(loader))
    trainer = Trainer(
        train_step=_train_step(model, loss_fn, tokenizer, accelerator.device),
        updates=[OptimizerUpdate(optimizer, scheduler, params, ema, after=partial(_clamp_temperature, raw))],
        prepared=[model],
        saved=[raw],
        validate=partial(retrieval_accuracy, accelerator, raw, tokenizer, held_out, config),
    )
    metrics = train_loop(run, loader, trainer)  # ends with the EMA weights in the model
    summary = run.finish(raw.parameters())
    out = _export(
        accelerator, raw, model_cfg, tokenizer, config, run, {**metrics, **summary}, len(train_data)
    )
    run.close()
    return out


def _train_step(model, loss_fn, tokenizer, device: torch.device):
    """One micro-batch of image/caption pairs -> the contrastive loss through `backward`; the scalars to log."""

    def step(batch, backward: Backward) -> dict[str, torch.Tensor]:
        ids = tokenize(tokenizer, batch["text"]).to(device)
        out = model(batch["pixel_values"], ids)
        loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
        backward(loss)
        return {"loss": loss.detach(), "logit_scale": out["logit_scale"].detach()}

    return step


@torch.no_grad()
def _clamp_temperature(model) -> None:
    """CLIP clips the temperature at 100 (Radford et al. 2021, §2.5): after each optimizer step."""
    model.logit_scale.clamp_(0, math.log(100))


@torch.no_grad()
def retrieval_accuracy(
    accelerator: Accelerator, model, tokenizer, held_out, config: CLIPTrainConfig, step: int
) -> dict:
    """Held-out top-1 image->text and text->image retrieval among all held-out pairs (main process only).

    A retrieved caption counts as right when its text equals the true caption (shapes captions repeat)."""
    metrics: dict[str, float] = {}
    if accelerator.is_main_process and len(held_out):
        model.eval()
        images, texts = [], []
        for batch in image_loader(held_out, config.data, 64, shuffle=False, flip=False):
            feats = model.encode_image(batch["pixel_values"].to(accelerator.device), normalize=True)
            images.append(feats)
            texts.extend(batch["text"])
        model.train()
        image_feats = torch.cat(images)
        text_feats = torch.cat(
            [
                model.encode_text(
                    tokenize(tokenizer, texts[i : i + 64]).to(accelerator.device), normalize=True
                )
                for i in range(0, len(texts), 64)
            ]
        )
        sims = image_feats @ text_feats.T
        same = torch.tensor([[a == b for b in texts] for a in texts], device=sims.device)
        rows = torch.arange(len(texts), device=sims.device)
        metrics = {
            "held_out_pairs": len(texts),
            "image_to_text_top1": same[rows, sims.argmax(1)].float().mean().item(),
            "text_to_image_top1": same[sims.argmax(0), rows].float().mean().item(),
            "chance_top1": same.float().mean().item(),
        }
        accelerator.log({k: v for k, v in metrics.items() if k != "held_out_pairs"}, step=step)
        tqdm.write(  # above the progress bar, not glued onto it
            f"step {step}: held-out retrieval top-1 image->text {metrics['image_to_text_top1']:.3f}, "
            f"text->image {metrics['text_to_image_top1']:.3f} (chance {metrics['chance_top1']:.3f})"
        )
    accelerator.wait_for_everyone()
    return metrics


def _export(
    accelerator: Accelerator,
    model,
    model_cfg: dict,
    tokenizer,
    config: CLIPTrainConfig,
    run: TrainingRun,
    metrics: dict,
    n_train: int,
) -> Path:
    """text_encoder/ + tokenizer/ (transformers) and open_clip/ (whole model) under output_dir/model."""
    model_dir = run.dir.model
    if accelerator.is_main_process:
        model = model.float().eval()
        text_encoder = open_clip_text_to_hf(model)
        ids = tokenize(tokenizer, ["a red circle to the left of a blue square", ""]).to(torch.device("cpu"))
        hf = text_encoder(ids).last_hidden_state
        ours = open_clip_token_features(model.cpu(), ids)
        metrics["export_max_abs_diff"] = (hf - ours).abs().max().item()  # conversion check: ~1e-6
        with staged_folder(model_dir) as staging:  # whole or absent (a kill or a full disk keeps the old one)
            text_encoder.save_pretrained(staging / "text_encoder", safe_serialization=True)
            save_tokenizer(tokenizer, staging / "tokenizer")
            oc = staging / "open_clip"
            oc.mkdir(parents=True)
            state = {k: v.contiguous() for k, v in model.state_dict().items()}
            save_file(state, oc / "open_clip_model.safetensors")
            preprocess = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic"}
            (oc / "open_clip_config.json").write_text(
                json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess}, indent=2)
            )
            (staging / "clip_metrics.json").write_text(json.dumps(metrics, indent=2))
            write_model_card(
                staging,
                "latentforge CLIP text encoder",
                run.dir.config,
                data_note(config.data, n_train),
                metrics,
            )
        accelerator.print(f"exported {model_dir} (text_encoder/, tokenizer/, open_clip/)")
    accelerator.wait_for_everyone()
    return model_dir


CONFIG_CLASS = CLIPTrainConfig
