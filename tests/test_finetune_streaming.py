"""Streaming tar shards (data.shards): shards written from `shapes`, split between processes without overlap,
unreadable members skipped and counted, a U-Net run on them, and a stopped-and-resumed run that trains on the
same samples in the same order as a straight one, without reading the samples it skips."""

import errno
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import datasets
import pytest
from safetensors.torch import load_file

from latentforge.config_loader import load_config
from latentforge.data.data_config import DataConfig
from latentforge.data.shapes import shapes_dataset
from latentforge.data.shards import expand_braces, find_shards, write_shards
from latentforge.data.streaming import ShardStream, index_shard, shard_loader
from latentforge.data.training_data import load_splits
from latentforge.resources import config_file, configs_root
from latentforge.training import unet as unet_trainer
from latentforge.training import unet_data

ROOT = Path(__file__).resolve().parents[1]
DDP = configs_root() / "accelerate" / "ddp.yaml"


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """24 shapes in 4 shards of 6."""
    folder = tmp_path_factory.mktemp("shards")
    data = shapes_dataset(24, size=32).cast_column("image", datasets.Image(decode=False))
    assert len(write_shards(data, folder, samples_per_shard=6)) == 4
    return folder


def _keys(stream: ShardStream, epoch: int) -> list[str]:
    return [stream.sample(epoch, i)["key"] for i in range(stream.samples_per_epoch)]


def test_shard_patterns_and_their_errors(shards, tmp_path):
    assert expand_braces("s/{08..10}-{a,b}.tar") == [
        f"s/{n}-{x}.tar" for n in ("08", "09", "10") for x in "ab"
    ]
    every = find_shards(str(shards))
    assert [p.name for p in every] == ["00000.tar", "00001.tar", "00002.tar", "00003.tar"]
    assert find_shards(f"{shards}/{{00000..00003}}.tar") == every == find_shards([f"{shards}/*.tar"])
    with pytest.raises(FileNotFoundError, match="00004.tar does not exist"):
        find_shards(f"{shards}/{{00000..00004}}.tar")
    with pytest.raises(FileNotFoundError, match="no .tar shard"):
        find_shards(str(tmp_path))
    with pytest.raises(ValueError, match="data.shards is empty"):
        find_shards([])
    with tarfile.open(every[0]) as tar:
        names = tar.getnames()
    assert names[:2] == ["000000000.png", "000000000.txt"]


@pytest.mark.parametrize("world_size", [2, 3])
def test_processes_get_disjoint_equal_shares_in_a_seeded_order(shards, world_size):
    config = DataConfig(resolution=32, shards=[str(shards)], seed=1)
    paths = find_shards(config.shards)
    streams = [ShardStream(paths, config, rank, world_size) for rank in range(world_size)]
    assert streams[0].by_shard == (world_size == 2)  # 4 shards: split by shard for 2, by sample for 3
    shares = [_keys(stream, 0) for stream in streams]
    assert len({len(share) for share in shares}) == 1, "processes would run different numbers of steps"
    seen = [key for share in shares for key in share]
    assert len(seen) == len(set(seen)) >= 24 - world_size + 1, "a sample twice in one epoch, or many dropped"
    if world_size == 2:  # whole shards per process
        assert {k.split("/")[0] for k in shares[0]} == {"00000.tar", "00002.tar"}
    again = ShardStream(paths, config, 0, world_size)
    assert _keys(again, 0) == shares[0], "the order must be a function of (seed, epoch)"
    assert _keys(again, 1) != shares[0], "every epoch in the same order"
    if world_size == 2:  # the same shards, in another order
        assert sorted(_keys(again, 1)) == sorted(shares[0])


def test_dataloader_workers_keep_the_order_and_the_skip(shards):
    config = DataConfig(resolution=32, shards=[str(shards)])
    alone = [batch["key"] for batch in shard_loader(config, 4)]
    workers = shard_loader(DataConfig(resolution=32, shards=[str(shards)], num_workers=2), 4)
    workers.set_epoch(0)
    assert [batch["key"] for batch in workers] == alone
    assert [batch["key"] for batch in workers.skip_first_batches(3)] == alone[3:]


def _member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_unreadable_members_are_skipped_and_counted(shards, tmp_path):
    bad = tmp_path / "bad.tar"
    good = find_shards(str(shards))[0]
    with tarfile.open(good) as source, tarfile.open(bad, "w") as tar:
        for member in source.getmembers()[:4]:  # two good samples
            tar.addfile(member, source.extractfile(member))
        _member(tar, "broken.png", b"not a png")
        _member(tar, "broken.txt", b"a broken image")
        _member(tar, "captiononly.txt", b"no image here")
        _member(tar, "meta.png", source.extractfile("000000000.png").read())
        _member(tar, "meta.json", json.dumps({"caption": "a caption from json"}).encode())
        _member(tar, "listed.png", source.extractfile("000000000.png").read())
        _member(tar, "listed.json", json.dumps(["valid JSON, not an object"]).encode())
    config = DataConfig(resolution=32, shards=[str(bad)])
    batch = next(iter(shard_loader(config, batch_size=6)))
    assert batch["skipped"] == 3 and len(batch["key"]) == 3
    assert "a caption from json" in batch["text"]
    cut = tmp_path / "cut.tar"
    second_image = index_shard(good)[1][1]["png"][0]
    cut.write_bytes(good.read_bytes()[: second_image + 10])  # the second image's data is cut short
    batch = next(iter(shard_loader(DataConfig(resolution=32, shards=[str(cut)]), batch_size=2)))
    assert batch["skipped"] == 1
    (tmp_path / "junk.tar").write_bytes(b"\0junk" * 300)
    with pytest.raises(ValueError, match="not a readable uncompressed tar"):
        shard_loader(DataConfig(shards=[str(tmp_path / "junk.tar")]), batch_size=2)


def test_a_full_disk_while_writing_shards_leaves_only_whole_ones(tmp_path, monkeypatch):
    from latentforge.data import shards as shards_module

    data = shapes_dataset(4, size=32).cast_column("image", datasets.Image(decode=False))
    add = shards_module._add

    def full_at_the_third_sample(tar, name, payload):
        if name.startswith("000000002."):
            raise OSError(errno.ENOSPC, "No space left on device")
        add(tar, name, payload)

    monkeypatch.setattr(shards_module, "_add", full_at_the_third_sample)
    with pytest.raises(OSError, match=r"could not write .*00001.tar \(No space left on device\)"):
        write_shards(data, tmp_path, samples_per_shard=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00000.tar"], "a partial shard was left"
    assert len(index_shard(tmp_path / "00000.tar")) == 2


def _config(out, shards, *overrides):
    return load_config(
        unet_trainer.UNetTrainConfig,
        config_file("train", "smoke-unet"),
        [f"output_dir={out}", f"data.shards={shards}", "checkpoint.every_steps=0", *overrides],
    )


def _record_keys(monkeypatch) -> list[list[str]]:
    """Keys of every batch the trainer encodes, in order."""
    seen, encode = [], unet_data.stream_inputs
    monkeypatch.setattr(
        unet_data, "stream_inputs", lambda c, batch, *a: seen.append(batch["key"]) or encode(c, batch, *a)
    )
    return seen


def test_streamed_run_resumes_at_the_same_sample(shards, tmp_path, monkeypatch):
    # 24 samples, batch 4, random crops (no cache could hold them): 6 batches an epoch, 8 steps cross into epoch 2
    steps = ["optim.max_steps=8", "data.center_crop=false"]
    seen = _record_keys(monkeypatch)
    straight = unet_trainer.train(_config(tmp_path / "straight", shards, *steps))
    assert len(seen) == 8 and len({k for batch in seen[:6] for k in batch}) == 24
    card = (straight / "README.md").read_text()
    assert '"streamed_shards": 4' in card and '"images_seen": 32' in card
    straight_keys = list(seen)

    seen.clear()
    unet_trainer.train(_config(tmp_path / "resumed", shards, "optim.max_steps=3", "data.center_crop=false"))
    read = []
    sample = ShardStream.sample
    monkeypatch.setattr(ShardStream, "sample", lambda self, *a: read.append(a) or sample(self, *a))
    resumed = unet_trainer.train(_config(tmp_path / "resumed", shards, *steps, "checkpoint.resume=latest"))
    assert seen == straight_keys, "the resumed run trained on other samples"
    assert len(read) == 5 * 4, "the resume read the samples it skipped"
    a = load_file(straight / "unet" / "diffusion_pytorch_model.safetensors")
    b = load_file(resumed / "unet" / "diffusion_pytorch_model.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6


def test_streaming_refuses_what_needs_the_cache(shards, tmp_path):
    with pytest.raises(ValueError, match="data.buckets=true needs the latent cache"):
        unet_trainer.train(_config(tmp_path, shards, "data.buckets=true"))
    with pytest.raises(FileNotFoundError, match="00004.tar does not exist"):
        unet_trainer.train(_config(tmp_path, f"{shards}/{{00000..00009}}.tar"))
    junk = tmp_path.parent / f"{tmp_path.name}-junk.tar"
    junk.write_bytes(b"\0junk" * 300)
    with pytest.raises(ValueError, match="junk.tar is not a readable uncompressed tar"):
        unet_trainer.train(_config(tmp_path, f"{shards}/00000.tar,{junk}"))
    assert not any(tmp_path.iterdir()), "the errors must come before any work"
    with pytest.raises(ValueError, match="streamed by the U-Net trainer only"):
        load_splits(DataConfig(shards=[str(shards)]))  # what the VAE and CLIP trainers read


# a 2-process run that writes the keys each process encoded to keys-<rank>.json
RECORDING_RUN = """
import json, os, sys
from latentforge.cli import main
from latentforge.training import unet_data

seen, encode = [], unet_data.stream_inputs
def recording(components, batch, *args):
    seen.extend(batch["key"])
    return encode(components, batch, *args)
unet_data.stream_inputs = recording
code = main(sys.argv[1:])
with open(os.path.join(sys.argv[-1].split("=", 1)[1], f"keys-{os.environ['RANK']}.json"), "w") as f:
    json.dump(seen, f)
sys.exit(code)
"""


def _launch(script: Path, shards: Path, out: Path, *overrides: str) -> list[list[str]]:
    """2 processes under configs/accelerate/ddp.yaml; the keys each one encoded."""
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(DDP)]
    command = [*launcher, str(script), "train", "unet", "--config", "smoke-unet", f"data.shards={shards}"]
    command += ["optim.max_steps=4", "checkpoint.every_steps=2", *overrides, f"output_dir={out}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads((out / f"keys-{rank}.json").read_text()) for rank in range(2)]


def test_two_processes_stream_disjoint_shards_and_resume_exactly(shards, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(RECORDING_RUN)
    straight = tmp_path / "straight"
    keys = _launch(script, shards, straight)
    assert len(keys[0]) == len(keys[1]) == 4 * 4  # 4 steps of 4, across an epoch end (3 batches an epoch)
    assert not set(keys[0][:12]) & set(keys[1][:12]), "two processes trained on the same sample"
    assert {k.split("/")[0] for k in keys[0]} == {"00000.tar", "00002.tar"}
    card = (straight / "model" / "README.md").read_text()
    sums = json.loads(card.split("```json")[1].split("```")[0])["weight_checksum_per_process"]
    assert len(sums) == 2 and sums[0] == sums[1]

    # both processes resume from the straight run's step 2 and train steps 3-4 on the same samples
    resumed = tmp_path / "resumed"
    again = _launch(script, shards, resumed, f"checkpoint.resume={straight}/checkpoints/checkpoint-2")
    assert again == [rank_keys[8:] for rank_keys in keys]
    a = load_file(straight / "model" / "unet" / "diffusion_pytorch_model.safetensors")
    b = load_file(resumed / "model" / "unet" / "diffusion_pytorch_model.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6


def _junk_shard(path: Path, first_key: int, count: int) -> None:
    """A tar of `count` samples whose images are not images."""
    with tarfile.open(path, "w") as tar:
        for key in range(first_key, first_key + count):
            _member(tar, f"{key:09d}.png", b"not a png")
            _member(tar, f"{key:09d}.txt", b"a broken image")


def test_unreadable_shards_of_one_process_stop_every_process(tmp_path):
    # shards 0 and 2 go to process 0 (readable), 1 and 3 to process 1 (every image unreadable): process 1 alone
    # passes data.max_corrupt_fraction; judged on the counts of both, both stop with the one-line error
    folder = tmp_path / "shards"
    data = shapes_dataset(32, size=32).cast_column("image", datasets.Image(decode=False))
    good = write_shards(data, folder, samples_per_shard=16)
    os.replace(good[1], folder / "00002.tar")
    for number in (1, 3):
        _junk_shard(folder / f"{number:05d}.tar", 100 * number, 16)
    out = tmp_path / "run"
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(DDP)]
    command = [*launcher, "-m", "latentforge", "train", "unet", "--config", "smoke-unet"]
    command += [f"data.shards={folder}", "optim.batch_size=8", f"output_dir={out}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.Popen(
        command, cwd=ROOT, env=env, text=True, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        _, stderr = run.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, 9)
        run.communicate()
        pytest.fail("a process stopped alone and the other waited for it")
    assert run.returncode != 0
    assert stderr.count("error: data: 32 of 64 images could not be read") == 2, stderr[-3000:]
