"""The five parts of a latent diffusion model, loaded from and saved to the diffusers folder layout.

A model folder holds `model_index.json` and one sub-folder per component (`unet/`, `vae/`,
`text_encoder/`, `tokenizer/`, `scheduler/`); an architecture folder (`configs/models/<name>/`) has the
same shape with config files only, and `Components.from_architecture` fills it with seeded random weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from latentforge.atomic_files import staged_folder
from latentforge.models import folder_checks
from latentforge.models.component_files import load_network
from latentforge.models.folder_checks import FILE_ONLY_OPTIONS
from latentforge.models.tokenizer import PAD_TOKENS, build_clip_tokenizer, load_tokenizer, save_tokenizer
from latentforge.models.weight_files import cast_floating
from latentforge.resources import architecture_dir, is_hub_id

logger = logging.getLogger(__name__)

COMPONENT_NAMES = ("vae", "text_encoder", "tokenizer", "unet", "scheduler")
# Folders of diffusers' Stable Diffusion layout that latentforge does not use.
IGNORED_FOLDERS = ("safety_checker", "feature_extractor", "image_encoder")


@dataclasses.dataclass
class Components:
    """VAE, CLIP text encoder + tokenizer, conditional U-Net and noise scheduler of one model."""

    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    unet: UNet2DConditionModel
    scheduler: SchedulerMixin
    name: str = ""  # shown in image metadata and model cards

    # ---- loading -------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls, path_or_id: str | os.PathLike, torch_dtype: torch.dtype | None = None, **file_options: Any
    ) -> Components:
        """Load a diffusers Stable-Diffusion-1.x/2.x folder (local path, or hub id when online); a file path is read
        as a single-file checkpoint by `from_single_file` with `file_options` (architecture, prediction_type,
        use_ema, allow_pickle); a folder takes none of them but allow_pickle, which it does not need."""
        if Path(path_or_id).is_file():
            return cls.from_single_file(path_or_id, torch_dtype=torch_dtype, **file_options)
        misplaced = [name for name in FILE_ONLY_OPTIONS if file_options.get(name)]
        if misplaced:
            raise ValueError(
                f"{misplaced} apply to a single-file checkpoint, not to the model folder {path_or_id}"
            )
        root = _resolve_model_path(path_or_id)
        folder_checks.check_model_folder(root)
        for extra in IGNORED_FOLDERS:
            if (root / extra).is_dir():
                logger.info("%s: ignoring %s/ (latentforge does not use it)", root, extra)
        kwargs = {"dtype": torch_dtype} if torch_dtype is not None else {}
        with folder_checks.loading("vae", root / "vae"):
            vae = load_network(AutoencoderKL, root / "vae", torch_dtype)
        with folder_checks.loading("unet", root / "unet"):
            unet = load_network(UNet2DConditionModel, root / "unet", torch_dtype)
        with folder_checks.loading("text_encoder", root / "text_encoder"):
            text_encoder = CLIPTextModel.from_pretrained(root / "text_encoder", **kwargs)
        tokenizer = load_tokenizer(root / "tokenizer")
        scheduler = load_scheduler(root / "scheduler")
        return cls(vae, text_encoder, tokenizer, unet, scheduler, name=_model_name(path_or_id))

    @classmethod
    def from_architecture(cls, name_or_path: str | os.PathLike, seed: int = 0) -> Components:
        """Random-weight components of an architecture folder (`configs/models/<name>` or a path), seeded."""
        root = architecture_dir(name_or_path)
        configs = {name: _read_json(root / name / "config.json") for name in ("vae", "unet", "text_encoder")}
        tokenizer_config = _read_json(root / "tokenizer" / "tokenizer_config.json")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            vae = AutoencoderKL.from_config(configs["vae"])
            unet = UNet2DConditionModel.from_config(configs["unet"])
            text_encoder = CLIPTextModel(CLIPTextConfig(**_strip_private(configs["text_encoder"])))
        for module in (vae, unet, text_encoder):
            module.eval()  # as from_pretrained returns them; training code calls .train() itself
        tokenizer = _architecture_tokenizer(tokenizer_config)
        scheduler = load_scheduler(root / "scheduler")
        return cls(vae, text_encoder, tokenizer, unet, scheduler, name=root.name)

    @classmethod
    def from_single_file(
        cls, path: str | os.PathLike, torch_dtype: torch.dtype | None = None, **options: Any
    ) -> Components:
        """Read a single-file SD 1.x/2.x checkpoint in the original (LDM) layout (see `models.single_file`).

        The architecture is the shipped one (configs/models/) that fits the file's keys and shapes. `options`:
        `architecture` (a name or folder) where the keys cannot tell (e.g. SD 2.x 768-v against 512-base);
        `prediction_type` ("epsilon" / "v_prediction") overrides its scheduler's; `use_ema=True` reads the
        EMA copy; `allow_pickle=True` allows .ckpt/.pt files.
        """
        from latentforge.models.single_file import load_single_file

        modules, arch, scheduler_config = load_single_file(path, torch_dtype, **options)
        tokenizer = _architecture_tokenizer(_read_json(arch / "tokenizer" / "tokenizer_config.json"))
        scheduler = scheduler_from_config(scheduler_config, f"{path} / {arch.name}")
        name = Path(path).stem
        return cls(modules["vae"], modules["text_encoder"], tokenizer, modules["unet"], scheduler, name=name)

    # ---- saving --------------------------------------------------------------------------------
    def save_pretrained(self, path: str | os.PathLike, fp16: bool = False, overwrite: bool = False) -> None:
        """Write a diffusers folder that stock `StableDiffusion[Inpaint]Pipeline.from_pretrained` loads.

        Safetensors only; `fp16=True` stores floating weights as float16. Written to a temporary folder
        beside `path` and renamed into place (`staged_folder`), so a crash or a full disk never leaves a
        half-written model at `path`, and an earlier one there survives a write that fails.
        A `path` ending in `.safetensors` gets one single-file checkpoint instead (`save_single_file`).
        """
        from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline

        path = Path(path)
        if path.suffix.lower() == ".safetensors":
            self.save_single_file(path, fp16=fp16, overwrite=overwrite)
            return
        if path.exists() and not overwrite and (not path.is_dir() or any(path.iterdir())):
            raise FileExistsError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")
        path.parent.mkdir(parents=True, exist_ok=True)
        pipeline_cls = StableDiffusionInpaintPipeline if self.is_inpaint else StableDiffusionPipeline
        pipeline = pipeline_cls(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=self.unet,
            scheduler=self.scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        with staged_folder(path) as tmp:
            pipeline.save_pretrained(tmp, safe_serialization=True)
            save_tokenizer(self.tokenizer, tmp / "tokenizer")
            if fp16:
                for file in tmp.glob("*/*.safetensors"):
                    _cast_safetensors(file, torch.float16)
            for file in tmp.glob("*/config.json"):  # where the weights were loaded from: a local path
                config = json.loads(file.read_text())
                if config.pop("_name_or_path", None) is not None:
                    file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    def save_single_file(self, path: str | os.PathLike, fp16: bool = False, overwrite: bool = False) -> Path:
        """Write one `.safetensors` checkpoint in the original (LDM) layout that A1111, ComfyUI and diffusers'
        `from_single_file` read (see `models.single_file_export`)."""
        from latentforge.models.single_file_export import save_single_file

        return save_single_file(self, path, fp16=fp16, overwrite=overwrite)

    # ---- utilities -----------------------------------------------------------------------------
    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Components:
        """Move the three networks (in place) to `device` and/or `dtype`; returns self."""
        # Only pass what is given: diffusers warns about fp32-kept modules whenever `dtype=` is passed.
        kwargs = {"dtype": dtype} if dtype is not None else {}
        for module in (self.vae, self.text_encoder, self.unet):
            module.to(device=device, **kwargs)
        return self

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell along each side (8 for Stable Diffusion)."""
        return vae_scale_factor(self.vae)

    @property
    def is_inpaint(self) -> bool:
        """True for an inpainting U-Net (`inpaint_in_channels` of its latent channels)."""
        return self.unet.config.in_channels == inpaint_in_channels(self.unet.config.out_channels)

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def weights_hash(self) -> str:
        """Short SHA-256 over all U-Net, VAE and text-encoder weights (identifies a model in metadata)."""
        digest = hashlib.sha256()
        for module in (self.unet, self.vae, self.text_encoder):
            for key, tensor in sorted(module.state_dict().items()):
                digest.update(key.encode())
                digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return digest.hexdigest()[:12]


def vae_scale_factor(vae: AutoencoderKL) -> int:
    """Pixels per latent cell along each side of `vae`'s latents (8 for Stable Diffusion)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def inpaint_in_channels(latent_channels: int) -> int:
    """Input channels of an inpainting U-Net: 2C + 1 (noisy latents, mask, masked-image latents; 9 for SD)."""
    return 2 * latent_channels + 1


def resolve_device(device: str | None = "auto") -> str:
    """`device` as given, or for "auto" (and None) "cuda" when it is available, else "cpu"."""
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_scheduler(folder: Path) -> SchedulerMixin:
    """The scheduler whose class and settings `folder/scheduler_config.json` names."""
    return scheduler_from_config(
        _read_json(folder / "scheduler_config.json"), folder / "scheduler_config.json"
    )


def scheduler_from_config(config: dict, source: str | os.PathLike) -> SchedulerMixin:
    """The scheduler whose class (`_class_name`) and settings `config` (read from `source`) names."""
    import diffusers

    class_name = config.get("_class_name")
    scheduler_cls = getattr(diffusers, str(class_name), None)
    if not (isinstance(scheduler_cls, type) and issubclass(scheduler_cls, SchedulerMixin)):
        raise ValueError(
            f"scheduler: {source} names _class_name={class_name!r}, "
            "which is not a diffusers scheduler class (e.g. 'DDIMScheduler')"
        )
    return scheduler_cls.from_config(config)


def _resolve_model_path(path_or_id: str | os.PathLike) -> Path:
    path = Path(path_or_id)
    if path.exists():
        if not path.is_dir():
            raise FileNotFoundError(f"model path {path} is a file; give a diffusers model folder")
        return path
    text = str(path_or_id)
    if not is_hub_id(text):
        raise FileNotFoundError(
            f"model folder {text} does not exist (and it is not a hub id like 'org/name')"
        )
    from huggingface_hub import snapshot_download

    patterns = ["model_index.json", "*.json", "*.txt", "*.safetensors"]
    try:
        return Path(
            snapshot_download(
                text,
                allow_patterns=[f"{c}/{p}" for c in COMPONENT_NAMES for p in patterns] + ["model_index.json"],
            )
        )
    except Exception as err:
        raise FileNotFoundError(
            f"model {text!r} is not a local folder and could not be fetched from the hub ({err}); "
            "download it once with a network, or give a local diffusers folder"
        ) from err


def _model_name(path_or_id: str | os.PathLike) -> str:
    return Path(path_or_id).name if Path(path_or_id).exists() else str(path_or_id)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path.parent.name}: {path} is missing")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path.parent.name}: {path} is not valid JSON ({err}); restore or re-export it"
        ) from err


def _architecture_tokenizer(tokenizer_config: dict) -> CLIPTokenizer:
    return build_clip_tokenizer(
        pad_token=tokenizer_config.get("pad_token", PAD_TOKENS["sd1"]),
        model_max_length=tokenizer_config.get("model_max_length", 77),
    )


def _strip_private(config: dict) -> dict:
    return {
        k: v
        for k, v in config.items()
        if not k.startswith("_") and k not in ("architectures", "transformers_version")
    }


def _cast_safetensors(file: Path, dtype: torch.dtype) -> None:
    from safetensors.torch import load_file, save_file

    save_file(cast_floating(load_file(file), dtype), file, metadata={"format": "pt"})
