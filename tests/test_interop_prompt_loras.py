"""A1111's `<lora:NAME:WEIGHT>` prompt syntax: tags are taken out of the prompt with their weights, names are
found in a LoRA folder, and bad tags or missing names are errors that say what to write."""

import pytest

from latentforge.pipelines.prompt_loras import LoraTag, extract_lora_tags, find_lora_file


def test_tags_leave_the_prompt_with_their_weights():
    text, tags = extract_lora_tags("a castle <lora:pixel-art:0.7>, at night <lora:moody>")
    assert text == "a castle , at night"
    assert tags == [LoraTag("pixel-art", 0.7), LoraTag("moody", 1.0)]
    assert extract_lora_tags("(a castle:1.2) [fog]") == ("(a castle:1.2) [fog]", [])
    assert extract_lora_tags("<lora:neg:-0.5>")[1] == [LoraTag("neg", -0.5)]


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("<lora:x:strong>", "must be a number"),
        ("<lora:x:1:0.5>", "separate text-encoder and U-Net weights"),
        ("<lora:x:1> and <lora:x:0.5>", "named twice"),
    ],
)
def test_bad_tags_say_what_to_write(prompt, message):
    with pytest.raises(ValueError, match=message):
        extract_lora_tags(prompt)


def test_names_are_found_in_the_lora_folder(tmp_path):
    (tmp_path / "styles").mkdir()
    (tmp_path / "styles" / "pixel-art.safetensors").write_bytes(b"")
    (tmp_path / "moody.pt").write_bytes(b"")
    assert find_lora_file("pixel-art", tmp_path) == tmp_path / "styles" / "pixel-art.safetensors"
    assert find_lora_file("moody", tmp_path) == tmp_path / "moody.pt"
    with pytest.raises(FileNotFoundError, match=r"no missing.safetensors in .* \(it has: moody, pixel-art\)"):
        find_lora_file("missing", tmp_path)
    with pytest.raises(FileNotFoundError, match="--lora-dir"):
        find_lora_file("x", tmp_path / "nowhere")


def test_lora_hash_is_a1111s_hash_of_the_tensor_bytes(tmp_path):
    """A1111 shows `Lora hashes: name: <12 hex>`: SHA-256 of the bytes after the safetensors header, so the
    header's metadata can change without changing the hash."""
    import torch
    from safetensors.torch import save_file

    from latentforge.models.lora_files import lora_short_hash

    tensors = {"lora_unet_a.lora_down.weight": torch.ones(2, 2)}
    save_file(tensors, tmp_path / "a.safetensors", metadata={"ss_network_dim": "2"})
    save_file(tensors, tmp_path / "b.safetensors", metadata={"ss_network_dim": "2", "note": "other"})
    hashed = lora_short_hash(tmp_path / "a.safetensors")
    assert len(hashed) == 12 and int(hashed, 16) >= 0
    assert hashed == lora_short_hash(tmp_path / "b.safetensors")
    save_file({"lora_unet_a.lora_down.weight": torch.zeros(2, 2)}, tmp_path / "c.safetensors")
    assert lora_short_hash(tmp_path / "c.safetensors") != hashed
