"""OpenCLIP text towers as transformers `CLIPTextModel`s, so OpenCLIP-conditioned models (as SD 2.x is)
save in the diffusers layout. The two implementations are the same network (pre-LN transformer, causal
mask, final LayerNorm); only parameter names and the fused q/k/v projection differ."""

from __future__ import annotations

import torch
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel

from latentforge.models.tokenizer import BOS, EOS, clip_vocab_and_merges


def open_clip_text_config(model: nn.Module) -> CLIPTextConfig:
    """The `CLIPTextConfig` of an open_clip `CLIP` model's text tower."""
    blocks = model.transformer.resblocks
    first = blocks[0]
    if not isinstance(first.ls_1, nn.Identity) or hasattr(first, "ln_1_kv"):
        raise ValueError(
            "open_clip text towers with LayerScale or cross-attention have no CLIPTextModel equivalent"
        )
    if getattr(model, "text_pool_type", "argmax") != "argmax":
        raise ValueError(f"open_clip text pooling {model.text_pool_type!r} is not supported (only 'argmax')")
    act = first.mlp.gelu
    hidden_act = "quick_gelu" if type(act).__name__ == "QuickGELU" else "gelu"
    vocab, _ = clip_vocab_and_merges()
    width = model.token_embedding.weight.shape[1]
    projection = model.text_projection
    proj_dim = projection.shape[1] if isinstance(projection, torch.Tensor) else projection.out_features
    return CLIPTextConfig(
        vocab_size=model.token_embedding.num_embeddings,
        hidden_size=width,
        intermediate_size=first.mlp.c_fc.out_features,
        num_attention_heads=first.attn.num_heads,
        num_hidden_layers=len(blocks),
        max_position_embeddings=model.positional_embedding.shape[0],
        hidden_act=hidden_act,
        layer_norm_eps=first.ln_1.eps,
        projection_dim=proj_dim,
        bos_token_id=vocab[BOS],
        eos_token_id=vocab[EOS],
        pad_token_id=vocab[EOS],
    )


def open_clip_text_to_hf(model: nn.Module) -> CLIPTextModel:
    """Convert the text tower of an open_clip `CLIP` model to a `CLIPTextModel` with equal outputs."""
    config = open_clip_text_config(model)
    hf = CLIPTextModel(config)
    state = {
        "embeddings.token_embedding.weight": model.token_embedding.weight,
        "embeddings.position_embedding.weight": model.positional_embedding,
        "final_layer_norm.weight": model.ln_final.weight,
        "final_layer_norm.bias": model.ln_final.bias,
    }
    for i, block in enumerate(model.transformer.resblocks):
        prefix = f"encoder.layers.{i}."
        q_w, k_w, v_w = block.attn.in_proj_weight.chunk(3)
        q_b, k_b, v_b = block.attn.in_proj_bias.chunk(3)
        state.update(
            {
                prefix + "self_attn.q_proj.weight": q_w,
                prefix + "self_attn.q_proj.bias": q_b,
                prefix + "self_attn.k_proj.weight": k_w,
                prefix + "self_attn.k_proj.bias": k_b,
                prefix + "self_attn.v_proj.weight": v_w,
                prefix + "self_attn.v_proj.bias": v_b,
                prefix + "self_attn.out_proj.weight": block.attn.out_proj.weight,
                prefix + "self_attn.out_proj.bias": block.attn.out_proj.bias,
                prefix + "layer_norm1.weight": block.ln_1.weight,
                prefix + "layer_norm1.bias": block.ln_1.bias,
                prefix + "layer_norm2.weight": block.ln_2.weight,
                prefix + "layer_norm2.bias": block.ln_2.bias,
                prefix + "mlp.fc1.weight": block.mlp.c_fc.weight,
                prefix + "mlp.fc1.bias": block.mlp.c_fc.bias,
                prefix + "mlp.fc2.weight": block.mlp.c_proj.weight,
                prefix + "mlp.fc2.bias": block.mlp.c_proj.bias,
            }
        )
    state = {k: v.detach().clone().float() for k, v in state.items()}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    # position_ids is a buffer transformers fills itself.
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(
            f"open_clip -> CLIPTextModel conversion left missing={missing} unexpected={unexpected}"
        )
    return hf.eval()


@torch.no_grad()
def open_clip_token_features(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Per-token features after the final LayerNorm, (B, L, width): what `last_hidden_state` holds in HF."""
    x = model.token_embedding(input_ids) + model.positional_embedding
    x = model.transformer(x, attn_mask=model.attn_mask)
    return model.ln_final(x)
