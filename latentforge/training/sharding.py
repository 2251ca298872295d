"""Exports from sharded training. Under FSDP2 every parameter is a DTensor holding one process's shard, so a
module's `state_dict()` on the main process is not the model; `full_copy` gathers the whole weights (a
collective: every process calls it) into an ordinary module for the export. Without sharding (one process,
DDP, DeepSpeed ZeRO-2) it returns the module itself and costs nothing."""

from __future__ import annotations

import torch


def is_sharded(module: torch.nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in module.parameters())


def full_copy(module: torch.nn.Module, is_main_process: bool) -> torch.nn.Module | None:
    """`module` when it is not sharded; else (on every process) its gathered weights in a plain module of the
    same class on the main process's CPU, and None on the other processes."""
    if not is_sharded(module):
        return module
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.fsdp import FSDPModule

    state = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not is_main_process:
        return None
    plain = next(c for c in type(module).__mro__ if not issubclass(c, FSDPModule))  # FSDP2 subclasses it
    with torch.device("meta"):
        copy = plain.from_config(module.config) if hasattr(plain, "from_config") else plain(module.config)
    copy.load_state_dict(state, strict=True, assign=True)
    for name, buffer in module.named_buffers():  # not in a state dict (e.g. CLIP's position_ids): not sharded
        owner, _, attr = name.rpartition(".")
        if copy.get_buffer(name).is_meta:
            copy.get_submodule(owner)._buffers[attr] = buffer.detach().cpu().clone()
    return copy.eval()
