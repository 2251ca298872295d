"""LoRA adapters and textual-inversion embeddings on a pipeline, with diffusers' method names and semantics.

The work is diffusers' own: its `StableDiffusionLoraLoaderMixin` and `TextualInversionLoaderMixin` methods run
on a small stand-in that holds our U-Net, text encoder and tokenizer. Ours are the safety around them: files
are read and checked (format, pickles, shapes) before anything changes, and a change of adapters or
embeddings waits for running generations (`AdapterLock`), so a generation uses the adapters that were set
when it started. The lock belongs to the U-Net, so pipelines that share modules (`from_pipe`) share it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import weakref
from collections.abc import Iterator

import torch

from latentforge.models import lora_files
from latentforge.models.embeddings import read_embedding

LORA_PARTS = ("unet", "text_encoder")


class AdapterLock:
    """Many generations at a time, or one change of adapters: a change waits for the running generations, and
    generations that arrive while a change waits start after it."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._generating: dict[int, int] = {}  # thread id -> nesting depth
        self._changing = False
        self._waiting_changes = 0

    @contextlib.contextmanager
    def generating(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._condition:
            if me not in self._generating:  # a nested call of the same thread does not wait
                while self._changing or self._waiting_changes:
                    self._condition.wait()
            self._generating[me] = self._generating.get(me, 0) + 1
        try:
            yield
        finally:
            with self._condition:
                self._generating[me] -= 1
                if not self._generating[me]:
                    del self._generating[me]
                self._condition.notify_all()

    @contextlib.contextmanager
    def changing(self) -> Iterator[None]:
        with self._condition:
            if threading.get_ident() in self._generating:
                raise RuntimeError(
                    "adapters and embeddings cannot change inside a generation of the same pipeline (e.g. from "
                    "callback_on_step_end); change them between calls"
                )
            self._waiting_changes += 1
            while self._changing or self._generating:
                self._condition.wait()
            self._waiting_changes -= 1
            self._changing = True
        try:
            yield
        finally:
            with self._condition:
                self._changing = False
                self._condition.notify_all()


_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def lock_for(unet: torch.nn.Module) -> AdapterLock:
    """The adapter lock of the pipelines over `unet`."""
    with _LOCKS_GUARD:
        if unet not in _LOCKS:
            _LOCKS[unet] = AdapterLock()
        return _LOCKS[unet]


@functools.cache
def _stand_in_class() -> type:
    from diffusers.loaders import StableDiffusionLoraLoaderMixin, TextualInversionLoaderMixin

    class DiffusersMethods(StableDiffusionLoraLoaderMixin, TextualInversionLoaderMixin):
        """What diffusers' loader methods read from a pipeline: its modules, and no offload hooks to manage."""

        hf_device_map = None
        components: dict = {}  # noqa: RUF012 - read only: diffusers looks for accelerate hooks in it

        def __init__(self, unet, text_encoder, tokenizer):
            self.unet, self.text_encoder, self.tokenizer = unet, text_encoder, tokenizer

    return DiffusersMethods


class AdapterMethods:
    """Mixin for pipelines with `unet`, `text_encoder` and `tokenizer`: LoRA and textual inversion."""

    @property
    def adapter_lock(self) -> AdapterLock:
        return lock_for(self.unet)

    def _diffusers(self):
        return _stand_in_class()(self.unet, self.text_encoder, self.tokenizer)

    def load_lora_weights(
        self, path: str | os.PathLike, adapter_name: str | None = None, allow_pickle: bool = False
    ) -> str:
        """Add the LoRA in `path` (kohya/A1111 or diffusers/peft .safetensors) as adapter `adapter_name`
        (default `default_<n>`, as diffusers), active with weight 1; returns its name. Checked in full first:
        on any error the pipeline is left as it was."""
        from diffusers.utils.peft_utils import get_adapter_name

        state, alphas, metadata = lora_files.read_lora(path, allow_pickle)
        with self.adapter_lock.changing():
            stand_in = self._diffusers()
            existing = {a for names in stand_in.get_list_adapters().values() for a in names}
            name = adapter_name or get_adapter_name(self.unet)
            if name in existing:
                raise ValueError(
                    f"adapter name {name!r} is already loaded ({sorted(existing)}); pass another"
                )
            lora_files.check_fit(state, {p: getattr(self, p) for p in LORA_PARTS}, path)
            try:
                stand_in.load_lora_into_unet(state, alphas, self.unet, adapter_name=name, metadata=metadata)
                stand_in.load_lora_into_text_encoder(
                    state, alphas, self.text_encoder, adapter_name=name, metadata=metadata
                )
            except Exception:
                if name in {a for names in stand_in.get_list_adapters().values() for a in names}:
                    stand_in.delete_adapters(name)
                raise
        return name

    def set_adapters(
        self, adapter_names: str | list[str], adapter_weights: float | list[float] | None = None
    ) -> None:
        """Activate these adapters with these weights (default 1 each), as diffusers' `set_adapters`."""
        with self.adapter_lock.changing():
            self._diffusers().set_adapters(adapter_names, adapter_weights)

    def get_active_adapters(self) -> list[str]:
        with self.adapter_lock.generating():
            return list(self._diffusers().get_active_adapters())

    def get_list_adapters(self) -> dict[str, list[str]]:
        """{"unet": [...], "text_encoder": [...]}: the adapters loaded into each module."""
        with self.adapter_lock.generating():
            return self._diffusers().get_list_adapters()

    def delete_adapters(self, adapter_names: str | list[str]) -> None:
        with self.adapter_lock.changing():
            self._diffusers().delete_adapters(adapter_names)

    def fuse_lora(self, lora_scale: float = 1.0, adapter_names: list[str] | None = None) -> None:
        """Merge the active (or named) adapters, times `lora_scale`, into the weights: faster generation."""
        with self.adapter_lock.changing():
            self._diffusers().fuse_lora(list(LORA_PARTS), lora_scale=lora_scale, adapter_names=adapter_names)

    def unfuse_lora(self) -> None:
        """Take fused adapters out of the weights again. As in diffusers, their scale stays `lora_scale` of the
        fuse; `set_adapters` sets the weights anew."""
        with self.adapter_lock.changing():
            self._diffusers().unfuse_lora(list(LORA_PARTS))

    def unload_lora_weights(self) -> None:
        """Remove every adapter (unfusing first), giving the base model back exactly."""
        with self.adapter_lock.changing():
            stand_in = self._diffusers()
            if any(getattr(m, "merged", False) for part in LORA_PARTS for m in getattr(self, part).modules()):
                stand_in.unfuse_lora(list(LORA_PARTS))
            stand_in.unload_lora_weights()

    def load_textual_inversion(
        self, path: str | os.PathLike, token: str | None = None, allow_pickle: bool = False
    ) -> str:
        """Add an embedding (A1111 .safetensors `emb_params` or .pt `string_to_param`, diffusers
        `learned_embeds`) as `token`: default the file's own token (diffusers format) or its name (A1111's
        rule: the file's stem). Several vectors become `<token> <token>_1 ...`, as diffusers. Returns the token."""
        stored, embedding = read_embedding(path, allow_pickle)
        token = token or stored
        with self.adapter_lock.changing():
            self._diffusers().load_textual_inversion(
                embedding, token=token, tokenizer=self.tokenizer, text_encoder=self.text_encoder
            )
        return token

    def unload_textual_inversion(self, tokens: str | list[str] | None = None) -> None:
        """Remove these (default: all) textual-inversion tokens and their embeddings."""
        with self.adapter_lock.changing():
            self._diffusers().unload_textual_inversion(tokens, self.tokenizer, self.text_encoder)
