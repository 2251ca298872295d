"""LoRA files in the pipelines: kohya/A1111 files (keys written here, as kohya's sd-scripts name them) and
diffusers files (written by diffusers' `save_lora_weights`) give diffusers' images; bad files change nothing;
adapter changes wait for running generations."""

import threading

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from pipeline_helpers import generator, one_thread, quiet, reference, tiny  # noqa: F401
from safetensors.torch import save_file

from latentforge.pipelines.pipeline import TextToImagePipeline

UNET_LAYERS = ("to_q", "to_k", "to_v", "to_out.0")
TEXT_LAYERS = ("q_proj", "v_proj", "fc1")


def _image(pipe, **kwargs) -> np.ndarray:
    out = quiet(pipe)(
        "a red circle", num_inference_steps=3, generator=generator(0), output_type="np", **kwargs
    )
    return out.images


def write_kohya(path, components, rank=4, alpha=2.0, seed=0, text_encoder=True) -> None:
    """A kohya/A1111 LoRA: `lora_unet_<path with _>` and `lora_te_text_model_<path with _>` keys, `.alpha`."""
    rng = torch.Generator().manual_seed(seed)
    tensors = {}
    parts = [("lora_unet_", components.unet, UNET_LAYERS)]
    parts += [("lora_te_text_model_", components.text_encoder, TEXT_LAYERS)] if text_encoder else []
    for prefix, model, layers in parts:
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and name.endswith(layers):
                key = prefix + name.replace(".", "_")
                tensors[f"{key}.lora_down.weight"] = (
                    torch.randn(rank, module.in_features, generator=rng) * 0.3
                )
                tensors[f"{key}.lora_up.weight"] = torch.randn(module.out_features, rank, generator=rng) * 0.3
                tensors[f"{key}.alpha"] = torch.tensor(alpha)
    save_file(tensors, path, metadata={"ss_network_dim": str(rank), "ss_network_alpha": str(alpha)})


def write_diffusers(folder, components, rank=4, alpha=8.0) -> str:
    """A LoRA as diffusers' training scripts save it: peft adapter, save_lora_weights with its metadata."""
    from diffusers.utils import convert_state_dict_to_diffusers

    unet = tiny(fresh=True).unet
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=["to_q", "to_v"], init_lora_weights=False)
    unet.add_adapter(config)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(
        folder, unet_lora_layers=layers, unet_lora_adapter_metadata=unet.peft_config["default"].to_dict()
    )
    return f"{folder}/pytorch_lora_weights.safetensors"


def _pair():
    """Our pipeline and a diffusers pipeline over two fresh copies of the same tiny model."""
    return TextToImagePipeline(tiny(fresh=True)), reference(StableDiffusionPipeline, tiny(fresh=True))


def test_kohya_lora_on_unet_and_text_encoder_matches_diffusers_and_unloads_exactly(tmp_path):
    write_kohya(tmp_path / "style.safetensors", tiny())
    ours, theirs = _pair()
    base = _image(ours)
    assert ours.load_lora_weights(tmp_path / "style.safetensors", adapter_name="style") == "style"
    theirs.load_lora_weights(str(tmp_path / "style.safetensors"), adapter_name="style")
    assert ours.get_list_adapters() == {"unet": ["style"], "text_encoder": ["style"]}
    with_lora = _image(ours)
    assert np.abs(with_lora - base).max() > 1e-2
    assert np.abs(with_lora - _image(theirs)).max() <= 1e-4
    ours.unload_lora_weights()
    np.testing.assert_array_equal(_image(ours), base)


def test_diffusers_lora_keeps_its_alpha_like_diffusers(tmp_path):
    file = write_diffusers(tmp_path, tiny(), rank=4, alpha=8.0)
    ours, theirs = _pair()
    ours.load_lora_weights(file)
    theirs.load_lora_weights(file)
    assert ours.get_active_adapters() == ["default_0"]
    assert ours.unet.peft_config["default_0"].lora_alpha == 8.0
    assert np.abs(_image(ours) - _image(theirs)).max() <= 1e-4


def test_several_adapters_with_weights_and_fusing_match_diffusers(tmp_path):
    write_kohya(tmp_path / "a.safetensors", tiny(), seed=1)
    file_b = write_diffusers(tmp_path, tiny())
    ours, theirs = _pair()
    for pipe in (ours, theirs):
        pipe.load_lora_weights(str(tmp_path / "a.safetensors"), adapter_name="a")
        pipe.load_lora_weights(file_b, adapter_name="b")
        pipe.set_adapters(["a", "b"], adapter_weights=[0.7, -0.4])
    assert ours.get_active_adapters() == ["a", "b"]
    mixed = _image(ours)
    assert np.abs(mixed - _image(theirs)).max() <= 1e-4
    ours.fuse_lora(lora_scale=0.5)
    theirs.fuse_lora(lora_scale=0.5)
    assert np.abs(_image(ours) - _image(theirs)).max() <= 1e-4
    ours.unfuse_lora()
    theirs.unfuse_lora()
    assert np.abs(_image(ours) - _image(theirs)).max() <= 1e-4  # as diffusers: the fused scale stays set
    ours.set_adapters(["a", "b"], adapter_weights=[0.7, -0.4])
    assert np.abs(_image(ours) - mixed).max() <= 1e-5
    with pytest.raises(ValueError, match="not in the list of present adapters"):
        ours.set_adapters(["c"])


def test_lora_for_another_architecture_names_the_key_and_changes_nothing(tmp_path):
    other = tiny(fresh=True)
    other.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn2.to_k = torch.nn.Linear(
        48, 64, bias=False
    )
    write_kohya(tmp_path / "wide.safetensors", other, text_encoder=False)
    pipe = TextToImagePipeline(tiny(fresh=True))
    base = _image(pipe)
    with pytest.raises(
        ValueError, match=r"does not fit this model .*attn2\.to_k\.lora_A\.weight has shape \(4, 48\)"
    ):
        pipe.load_lora_weights(tmp_path / "wide.safetensors")
    name = "lora_unet_down_blocks_7_resnets_0_conv1"
    save_file(
        {f"{name}.lora_down.weight": torch.zeros(4, 8), f"{name}.lora_up.weight": torch.zeros(8, 4)},
        tmp_path / "x.safetensors",
    )
    with pytest.raises(
        ValueError, match="names a layer down_blocks.7.resnets.0.conv1 this model does not have"
    ):
        pipe.load_lora_weights(tmp_path / "x.safetensors")
    assert pipe.get_list_adapters() == {}
    np.testing.assert_array_equal(_image(pipe), base)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (["lora_unet_a.hada_w1_a", "lora_unet_a.hada_w1_b"], "LyCORIS LoHa"),
        (["lora_unet_a.lokr_w1"], "LyCORIS LoKr"),
        (
            ["lora_te2_text_model_x.lora_down.weight", "lora_te2_text_model_x.lora_up.weight"],
            "text_encoder_2",
        ),
        (["model.diffusion_model.input_blocks.0.0.weight"], "not a LoRA file latentforge reads"),
    ],
)
def test_unknown_lora_formats_are_refused_by_name(tmp_path, keys, message):
    save_file({k: torch.zeros(4, 4) for k in keys}, tmp_path / "f.safetensors")
    pipe = TextToImagePipeline(tiny(fresh=True))
    with pytest.raises(ValueError, match=message):
        pipe.load_lora_weights(tmp_path / "f.safetensors")
    assert pipe.get_list_adapters() == {}


def test_pickled_lora_needs_permission(tmp_path):
    write_kohya(tmp_path / "a.safetensors", tiny())
    from safetensors.torch import load_file

    torch.save(load_file(tmp_path / "a.safetensors"), tmp_path / "a.pt")
    pipe = TextToImagePipeline(tiny(fresh=True))
    with pytest.raises(ValueError, match="is a pickle"):
        pipe.load_lora_weights(tmp_path / "a.pt")
    pipe.load_lora_weights(tmp_path / "a.pt", allow_pickle=True)
    assert pipe.get_active_adapters() == ["default_0"]


def test_a_generation_keeps_its_adapters_and_changes_wait_for_it(tmp_path):
    write_kohya(tmp_path / "a.safetensors", tiny())
    pipe = TextToImagePipeline(tiny(fresh=True))
    pipe.load_lora_weights(tmp_path / "a.safetensors", adapter_name="a")
    expected = _image(pipe)
    started, release, results = threading.Event(), threading.Event(), {}

    def hold(p, step, timestep, kwargs):
        started.set()
        release.wait(10)
        return kwargs

    generation = threading.Thread(
        target=lambda: results.update(image=_image(pipe, callback_on_step_end=hold))
    )
    change = threading.Thread(target=lambda: pipe.set_adapters("a", 0.0))
    generation.start()
    assert started.wait(30)
    change.start()
    change.join(0.5)
    assert change.is_alive(), "the adapter change did not wait for the running generation"
    release.set()
    generation.join(60)
    change.join(60)
    np.testing.assert_array_equal(results["image"], expected)  # the adapters set when it started
    assert np.abs(_image(pipe) - expected).max() > 1e-3  # weight 0 now

    def change_inside(p, step, timestep, kwargs):
        p.set_adapters("a", 1.0)
        return kwargs

    with pytest.raises(RuntimeError, match="cannot change inside a generation"):
        _image(pipe, callback_on_step_end=change_inside)
    assert TextToImagePipeline.from_pipe(pipe).adapter_lock is pipe.adapter_lock
