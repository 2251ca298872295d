"""Quiet output: the libraries' own progress bars (transformers' "Loading weights" and "Writing model shards",
diffusers' loading bars) are switched off, so that a command shows only its own lines and bars."""

from __future__ import annotations


def quiet_library_progress_bars() -> None:
    """Switch off transformers' and diffusers' progress bars (hub downloads keep theirs)."""
    # imported here: both import torch, and only commands that load models call this
    import diffusers
    import transformers

    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.disable_progress_bar()
