"""Registered training objects (EMA, LR schedulers) go to safetensors + JSON and come back exactly; older
checkpoints' pickles are read with torch's weights-only loader, which refuses code."""

import errno
import json
import os
import pickle
import signal
import subprocess
import sys

import pytest
import torch
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel

from latentforge.resources import configs_root
from latentforge.training.checkpoints import OBJECTS_JSON, OBJECTS_TENSORS, load_objects, save_objects


def _objects(seed: int):
    torch.manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(3, 4)), torch.nn.Parameter(torch.randn(5))]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=2, num_training_steps=10)
    ema = EMAModel(params, decay=0.999, use_ema_warmup=True, power=0.75)
    return params, optimizer, scheduler, ema


def _advance(params, optimizer, scheduler, ema, steps: int) -> None:
    for _ in range(steps):
        sum(p.square().sum() for p in params).backward()
        optimizer.step()
        scheduler.step()
        ema.step(params)
        optimizer.zero_grad()


def test_objects_round_trip_through_safetensors_and_json(tmp_path):
    params, optimizer, scheduler, ema = _objects(0)
    _advance(params, optimizer, scheduler, ema, 4)
    save_objects([scheduler, ema], tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [OBJECTS_JSON, OBJECTS_TENSORS]
    json.loads((tmp_path / OBJECTS_JSON).read_text())  # plain JSON, no pickle anywhere

    fresh = _objects(1)  # different values everywhere
    load_objects([fresh[2], fresh[3]], tmp_path)
    assert fresh[2].state_dict() == scheduler.state_dict()
    assert fresh[3].optimization_step == ema.optimization_step == 4
    for a, b in zip(fresh[3].shadow_params, ema.shadow_params):
        assert torch.equal(a, b)
    # the restored scheduler continues on the same learning-rate curve
    fresh[1].load_state_dict(optimizer.state_dict())
    _advance(fresh[0], fresh[1], fresh[2], fresh[3], 1)
    _advance(params, optimizer, scheduler, ema, 1)
    assert fresh[2].get_last_lr() == scheduler.get_last_lr()


def test_object_count_mismatch_and_missing_state_are_errors(tmp_path):
    _, _, scheduler, ema = _objects(0)
    save_objects([scheduler, ema], tmp_path)
    with pytest.raises(ValueError, match="2 training objects, this run has 1"):
        load_objects([scheduler], tmp_path)
    with pytest.raises(FileNotFoundError, match="EMA and LR scheduler"):
        load_objects([scheduler], tmp_path / "nothing")
    # an EMA over other parameters (e.g. saved before the encoder was frozen) must not resume silently
    fewer = EMAModel([torch.nn.Parameter(torch.randn(5))], decay=0.999)
    with pytest.raises(ValueError, match="EMA follows 2 parameters, this run trains 1"):
        load_objects([scheduler, fewer], tmp_path)


class _Exploit:
    def __reduce__(self):
        return (exec, ("raise SystemExit('pickle ran code')",))


def test_legacy_pickles_load_weights_only_and_refuse_code(tmp_path):
    _, _, scheduler, ema = _objects(0)
    torch.save(scheduler.state_dict(), tmp_path / "custom_checkpoint_0.pkl")
    torch.save(ema.state_dict(), tmp_path / "custom_checkpoint_1.pkl")
    fresh = _objects(1)
    load_objects([fresh[2], fresh[3]], tmp_path)  # an older checkpoint still resumes
    assert all(torch.equal(a, b) for a, b in zip(fresh[3].shadow_params, ema.shadow_params))

    (tmp_path / "custom_checkpoint_0.pkl").write_bytes(pickle.dumps({"state": _Exploit()}, protocol=2))
    with pytest.raises(pickle.UnpicklingError):
        load_objects([fresh[2], fresh[3]], tmp_path)


def test_a_checkpoint_from_before_objects_json_still_resumes(tmp_path):
    """An older run's checkpoint (accelerate pickled EMA/scheduler as custom_checkpoint_N.pkl) resumes with
    the weights-only reader, without accelerate insisting on unpickling those files itself."""
    from accelerate import Accelerator

    from latentforge.training.checkpoints import MARKER, STATE_FILE, CheckpointManager, _manifest

    params, optimizer, scheduler, ema = _objects(0)
    model = torch.nn.Linear(2, 2)
    _advance(params, optimizer, scheduler, ema, 3)
    old = Accelerator(cpu=True)
    old.prepare(model)
    old.register_for_checkpointing(scheduler, ema)  # what older latentforge did
    folder = tmp_path / "checkpoints" / "checkpoint-3"
    old.save_state(str(folder))
    assert (folder / "custom_checkpoint_1.pkl").is_file()
    (folder / STATE_FILE).write_text(json.dumps({"step": 3}))
    marker = {"step": 3, "num_processes": 1, "files": _manifest(folder)}
    (folder / MARKER).write_text(json.dumps(marker))

    fresh = _objects(1)
    new = Accelerator(cpu=True)
    new.prepare(torch.nn.Linear(2, 2))
    manager = CheckpointManager(new, tmp_path)
    manager.register(fresh[2], fresh[3])
    assert manager.load("latest") == {"step": 3}
    assert fresh[3].optimization_step == 3 and fresh[2].state_dict() == scheduler.state_dict()
    assert all(torch.equal(a, b) for a, b in zip(fresh[3].shadow_params, ema.shadow_params))


# 2 processes save a checkpoint; the main process's finishing step meets a full disk
FULL_DISK_SAVE = """
import errno, sys
import torch
from accelerate import Accelerator
from latentforge.training.checkpoints import CheckpointManager

def full_disk(self, tmp, *args):
    raise OSError(errno.ENOSPC, "No space left on device", str(tmp / "trainer_state.json"))

CheckpointManager._finish = full_disk
accelerator = Accelerator(cpu=True)
model = accelerator.prepare(torch.nn.Linear(2, 2))
manager = CheckpointManager(accelerator, sys.argv[1])
try:
    manager.save(1, {}, [model])
except OSError as err:
    print(f"process {accelerator.process_index}: errno {err.errno}: {err}", flush=True)
    sys.exit(3)
"""


def test_a_failed_save_on_the_main_process_stops_every_process(tmp_path):
    # the other process used to wait at the save's last barrier for a main process that had raised
    script = tmp_path / "save.py"
    script.write_text(FULL_DISK_SAVE)
    ddp = configs_root() / "accelerate" / "ddp.yaml"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ddp), str(script)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.Popen(
        [*command, str(tmp_path / "run")], env=env, text=True, stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        stdout, _ = run.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        run.communicate()
        pytest.fail("a process waited forever for the main process's failed save")
    for rank in (0, 1):
        assert f"process {rank}: errno {errno.ENOSPC}: could not write checkpoint 1" in stdout, stdout
    assert not list((tmp_path / "run" / "checkpoints").iterdir()), "a partial checkpoint was left"
