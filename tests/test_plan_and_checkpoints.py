import torch

from pocus_edge.distill import checkpoint as ckpt
from pocus_edge.distill.plan import BatchPlan, resolve_accum_steps


def _plan(rank=0, world=1, accum=1):
    return BatchPlan(num_frames=37, global_batch=8, world_size=world, rank=rank, accum_steps=accum, seed=4)


def test_ranks_partition_each_global_batch_without_overlap():
    for step in range(10):
        per_rank = [sum(_plan(r, 2, 2).step_micro_batches(step), []) for r in range(2)]
        single = sum(_plan().step_micro_batches(step), [])
        assert per_rank[0] + per_rank[1] == single  # same samples, same augmentation seeds
        assert all(len(mb) == 2 for mb in _plan(0, 2, 2).step_micro_batches(step))


def test_epochs_reshuffle_and_cover_distinct_frames():
    plan = _plan()
    assert plan.steps_per_epoch == 4
    epoch0 = [i for s in range(4) for i, _ in sum(plan.step_micro_batches(s), [])]
    epoch1 = [i for s in range(4, 8) for i, _ in sum(plan.step_micro_batches(s), [])]
    assert len(set(epoch0)) == 32 and epoch0 != epoch1


def test_resuming_the_plan_mid_run_gives_the_same_batches():
    plan = _plan(accum=2)
    full = list(plan.micro_batches_from(0, 12))
    assert list(plan.micro_batches_from(5, 12)) == full[10:]


def test_accumulation_is_resolved_to_fit():
    assert resolve_accum_steps(512, 1, 0, 64) == 8
    assert resolve_accum_steps(512, 2, 0, 64) == 4
    assert resolve_accum_steps(48, 1, 0, 64) == 1
    assert resolve_accum_steps(48, 1, 3, 64) == 3


def test_checkpoints_keep_last_k_and_skip_corrupt(tmp_path):
    for step in (2, 4, 6, 8):
        ckpt.save_checkpoint(tmp_path, step, {"step": step, "w": torch.full((3,), float(step))}, keep_last=3)
    names = [p.name for p in ckpt.list_checkpoints(tmp_path)]
    assert names == ["step-00000004.pt", "step-00000006.pt", "step-00000008.pt"]
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))
    newest = ckpt.list_checkpoints(tmp_path)[-1]
    newest.write_bytes(newest.read_bytes()[:100])  # truncated, as after a crash or a bad copy
    path, state = ckpt.load_latest_valid(tmp_path)
    assert path.name == "step-00000006.pt" and state["step"] == 6
    # a checkpoint without its hash sidecar (killed between the two writes) is not trusted either
    (tmp_path / "checkpoints" / "step-00000006.pt.sha256").unlink()
    assert ckpt.load_latest_valid(tmp_path)[0].name == "step-00000004.pt"


def test_rng_state_round_trips_through_weights_only_load(tmp_path):
    import random

    import numpy as np

    state = ckpt.rng_state()
    torch.save(state, tmp_path / "rng.pt")
    expected = (random.random(), float(np.random.rand()), float(torch.rand(())))
    ckpt.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected
