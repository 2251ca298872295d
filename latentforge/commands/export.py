"""latentforge export SOURCE OUTPUT: save a model in the diffusers layout (safetensors) that stock
`StableDiffusionPipeline.from_pretrained` loads, or, for an OUTPUT ending in .safetensors, as one single-file
checkpoint in the original (LDM) layout that A1111, ComfyUI and diffusers' `from_single_file` read.

SOURCE is a diffusers-layout model (local folder, or hub id when online), a single-file checkpoint
(.safetensors, or .ckpt with --allow-pickle), or with --architecture an architecture (a name in
configs/models/ or a folder of configs) filled with seeded random weights. The weights keep SOURCE's
precision (float16 stays float16) unless --dtype asks for another. A folder OUTPUT also gets SOURCE's model
card and generation defaults; a single file holds the weights (and the scheduler's settings) only. --vae
swaps in another VAE of the same latent space (a fine-tuned decoder), as the export's VAE.
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
from pathlib import Path

from latentforge.commands.model_files import add_single_file_arguments, check_single_file
from latentforge.commands.sampling_flags import add_sampling_arguments, given_sampling
from latentforge.commands.shared_flags import check_model, deprecated
from latentforge.models.folder_checks import SAFETENSORS_SUFFIX, single_file_options
from latentforge.pipelines.sampling_defaults import FILE, check_defaults, read_defaults, write_defaults

HELP = "save a model as a diffusers folder or a single-file checkpoint (safetensors, fp32 or fp16)."
RAW = argparse.RawDescriptionHelpFormatter  # keep the docstring's paragraphs
DTYPES = ("auto", "float32", "float16")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help=HELP, description=__doc__, formatter_class=RAW)
    parser.add_argument(
        "source",
        help="model folder, hub id, single-file checkpoint, or architecture name/folder with --architecture.",
    )
    parser.add_argument(
        "output",
        nargs="?",
        help="folder, or FILE.safetensors for one single-file checkpoint, to write (must not exist unless "
        "--overwrite).",
    )
    parser.add_argument("-o", "--output", dest="output_option", metavar="OUTPUT", help="the same as OUTPUT.")
    parser.add_argument(
        "--architecture", action="store_true", help="SOURCE is an architecture: random weights."
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for random weights with --architecture.")
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        default="auto",
        help="precision of the saved weights (default auto: SOURCE's; float32 for an architecture).",
    )
    parser.add_argument("--fp16", action="store_true", help="deprecated: use --dtype float16.")
    parser.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists.")
    parser.add_argument(
        "--vae",
        metavar="FOLDER",
        help="save this VAE instead of SOURCE's (a model folder with vae/, or a vae/ folder), e.g. a fine-tuned "
        "decoder: it must make the latents SOURCE's U-Net works on.",
    )
    recommended = parser.add_argument_group(
        "recommended sampling settings",
        "stored in OUTPUT/generation_defaults.json (over SOURCE's); `generate` and `eval` use them when a "
        "setting is not given.",
    )
    add_sampling_arguments(recommended, default=None, image_task="both")
    add_single_file_arguments(parser, model_flag="SOURCE")
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    output = _output(args)
    if args.fp16:
        deprecated("--fp16", "--dtype float16")
    given = check_defaults(given_sampling(args), "export")  # before anything is loaded or written
    single_file = output.lower().endswith(SAFETENSORS_SUFFIX)
    if single_file and given:
        raise ValueError(
            "export: recommended sampling settings are stored in a folder's generation_defaults.json; "
            f"{output} is a single file: leave them out or export to a folder"
        )
    options = _source_options(args)
    if args.vae:
        check_model(args.vae, hub_ids=False, flag="--vae")
    has_own = not args.architecture and (Path(args.source) / FILE).is_file()
    defaults = read_defaults(args.source).updated(**given) if has_own or given else None
    fp16 = args.fp16 or args.dtype == "float16" or (args.dtype == "auto" and _stored_in_fp16(args.source))
    # imported here, not at the top: it imports torch, and --help and the checks above must not wait for it
    from latentforge.commands.library_output import quiet_library_progress_bars
    from latentforge.models.components import Components

    quiet_library_progress_bars()
    if args.architecture:
        components = Components.from_architecture(args.source, seed=args.seed)
    else:
        components = Components.from_pretrained(args.source, **options)
    if args.vae:
        components.vae = _replacement_vae(args.vae, components)
    components.save_pretrained(output, fp16=fp16, overwrite=args.overwrite)  # a .safetensors path: one file
    card = Path(args.source) / "README.md"
    if not single_file and not args.architecture and card.is_file():  # the model card goes along
        shutil.copyfile(card, Path(output) / "README.md")
    if defaults is not None and not single_file:
        write_defaults(output, defaults)
    print(f"saved {output} ({'float16' if fp16 else 'float32'} weights)")
    return 0


def _replacement_vae(folder: str, components):
    """The VAE of `folder`, checked to fit the U-Net of `components` (latent channels and size), loaded in its
    precision."""
    from diffusers import AutoencoderKL

    from latentforge.models.component_files import component_folder, has_weights, load_network

    weights = component_folder(folder, "vae")
    if not has_weights(weights):
        raise FileNotFoundError(
            f"--vae: {folder} holds no trained VAE weights (vae/ with a safetensors file)"
        )
    old = components.vae
    vae = load_network(AutoencoderKL, weights, old.dtype)
    ours = (vae.config.latent_channels, len(vae.config.block_out_channels))
    theirs = (old.config.latent_channels, len(old.config.block_out_channels))
    if ours != theirs:
        raise ValueError(
            f"--vae: {folder} makes latents of {ours[0]} channels at 1/{2 ** (ours[1] - 1)} size, the model's U-Net "
            f"works on {theirs[0]} channels at 1/{2 ** (theirs[1] - 1)}; give a VAE of the same latent space"
        )
    return vae


def _output(args: argparse.Namespace) -> str:
    """OUTPUT (or -o), given once; FileExistsError when it exists and --overwrite is not given."""
    output = args.output_option or args.output
    if not output or (args.output and args.output_option and args.output != args.output_option):
        raise ValueError("export: give the OUTPUT folder or .safetensors file once (as OUTPUT or -o OUTPUT)")
    if Path(output).exists() and not args.overwrite:
        raise FileExistsError(f"export: {output} exists; pass --overwrite to replace it")
    return output


def _source_options(args: argparse.Namespace) -> dict:
    """`from_single_file`'s options for a single-file SOURCE, checked (no options for an architecture)."""
    options = single_file_options(args)
    if args.architecture:
        if any(options.values()):
            raise ValueError(
                "export: the single-file options are for a checkpoint SOURCE, not --architecture"
            )
        return {}
    check_model(args.source, flag="SOURCE")
    check_single_file(args.source, options, flag="SOURCE")
    return options if Path(args.source).is_file() else {}


def _stored_in_fp16(source: str) -> bool:
    """True when a local model's U-Net weights are float16 (read from the safetensors header, no torch): the
    files of unet/, or the U-Net's tensors (model.diffusion_model.*) of a single-file checkpoint."""
    if Path(source).is_file():
        files, prefix = (
            ([Path(source)] if source.lower().endswith(SAFETENSORS_SUFFIX) else []),
            "model.diffusion_model.",
        )
    else:
        files, prefix = sorted((Path(source) / "unet").glob("*.safetensors")), ""
    if not files:
        return False
    try:
        with open(files[0], "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(min(length, 100_000_000)))
        assert isinstance(header, dict)
    except (
        struct.error,
        ValueError,
        AssertionError,
    ):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(
            f"SOURCE: {files[0]} is not a readable safetensors file (its header is cut or garbled): it is "
            "truncated or corrupt; download or export it again"
        ) from None
    dtypes = {v["dtype"] for k, v in header.items() if k != "__metadata__" and k.startswith(prefix)}
    return dtypes == {"F16"}
