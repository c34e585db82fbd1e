"""The distillation loop of `pocus distill`: teacher tokens -> student tokens -> eq. (6) -> AdamW.

Side effects live here: RUN_DIR/checkpoints/, student.safetensors + student.json, config.yaml,
metrics.jsonl, skipped_files.txt. Only rank 0 writes; every rank computes.
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ..allocator import keep_freed_memory
from ..data.dataset import EvalFrames
from ..errors import ConfigError
from ..io import atomic_write_text
from . import checkpoint as ckpt
from .config import DistillConfig, parse_save_every
from .data import attach_frame_cache
from .ddp import DistEnv, barrier, init_distributed, mean_across_ranks, params_in_sync, shutdown
from .masked import MaskedConsistency
from .method import DistillMethod, TokenDistillation
from .objective import R2Accumulator, mixup
from .progress import TrainProgress
from .setup import autocast_dtype, build_optimizer, check_resume_compatible

log = logging.getLogger(__name__)

# `pocus distill --objective NAME`: the method plugged into the loop (config.validate checks the name here)
OBJECTIVES: dict[str, type[DistillMethod]] = {TokenDistillation.name: TokenDistillation,
                                              MaskedConsistency.name: MaskedConsistency}


class _MicroBatches:
    """Iterable batch sampler over the plan's micro-batches from a start step (DataLoader-compatible)."""

    def __init__(self, plan, start: int, end: int):
        self.plan, self.start, self.end = plan, start, end

    def __iter__(self):
        return self.plan.micro_batches_from(self.start, self.end)

    def __len__(self) -> int:
        return max(0, self.end - self.start) * self.plan.accum_steps


@torch.no_grad()
def held_out_r2(teacher, student, loader, cache: list, device, amp_dtype, method: DistillMethod) -> float:
    """R² of student vs teacher tokens on held-out frames; teacher tokens are computed once and cached."""
    was_training = student.training
    student.eval()
    acc = R2Accumulator()
    for i, images in enumerate(loader):
        images = images.to(device)
        with _autocast(device, amp_dtype):
            if len(cache) <= i:
                cache.append(method.eval_tokens(teacher, images).float().cpu())
            predicted = method.eval_tokens(student, images).float().cpu()
        acc.update(predicted, cache[i])
    student.train(was_training)
    return acc.compute()


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def _truncate_metrics(path: Path, after_step: int) -> None:
    """Drop metric lines logged after the checkpoint we resume from (the interrupted tail)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= after_step]
    atomic_write_text(path, "\n".join(kept) + ("\n" if kept else ""))


def _match_state_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give each optimizer state tensor its parameter's memory layout (fused AdamW pairs elements by storage).

    A checkpoint written by a run whose student was not channels_last holds contiguous moments; the fused kernel
    would silently update the wrong elements with them.
    """
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


class TrainStep:
    """The models, optimizer and schedule of a run, and one optimizer step over accumulated micro-batches.

    Distiller drives it over the data; benchmarks/gpu/check.py times the same step on synthetic batches.
    """

    def __init__(self, cfg: DistillConfig, env: DistEnv, method: DistillMethod, total_steps: int):
        self.cfg, self.env, self.method = cfg, env, method
        self.teacher, self.student = method.build_models(cfg, env.device)
        self.student = self.student.to(memory_format=torch.channels_last)  # NHWC convolutions: faster fwd/bwd
        self.optimizer, self.scheduler = build_optimizer(cfg, self.student, total_steps)
        self.amp_dtype = autocast_dtype(cfg, env.device)
        self.scaler = torch.amp.GradScaler(env.device.type, enabled=self.amp_dtype == torch.float16)
        self.step = 0

    def train_step(self, micro_batches: list[torch.Tensor]) -> float:
        """One optimizer step over the accumulated micro-batches; returns the mean loss."""
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), dtype=torch.float64, device=self.env.device)  # summed on the device: one sync/step
        for i, images in enumerate(micro_batches):
            images = images.to(self.env.device, non_blocking=True)
            seed = self.cfg.seed * 1_000_003 + self.step * 997 + i * 31 + self.env.rank
            if self.cfg.mixup:
                images, _, _ = mixup(images, torch.Generator().manual_seed(seed))
            self.method.batch_seed = seed  # per-micro-batch randomness of a method (masks) is drawn from this
            last = i == len(micro_batches) - 1
            sync = nullcontext() if (last or not self.env.distributed) else self.student.no_sync()
            with sync, _autocast(self.env.device, self.amp_dtype):
                loss = self.method.loss(self.teacher, self.student, images) / len(micro_batches)
            self.scaler.scale(loss).backward()
            total += loss.detach().double()
        if self.cfg.clip_grad > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.student.parameters(), self.cfg.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        value = float(total)
        if not math.isfinite(value):
            raise FloatingPointError(f"loss became {value} at step {self.step}; lower --lr or use --precision fp32")
        return value


class Distiller(TrainStep):
    """One distillation run; `run()` returns a summary dict."""

    def __init__(self, cfg: DistillConfig, env: DistEnv, method: DistillMethod | None = None):
        self.cfg, self.env = cfg, env
        self.allocator = keep_freed_memory()  # before the models and the loader workers exist
        if method is not None and cfg.objective != TokenDistillation.name and method.name != cfg.objective:
            raise ConfigError(f"objective {cfg.objective!r} is a `pocus distill` setting; this command trains with "
                              f"its own objective ({method.name}): drop the setting")
        self.method = method or OBJECTIVES[cfg.objective]()
        self.run_dir = Path(cfg.out)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.data = self.method.prepare_data(cfg, env)
        self.save_every, self.save_unit = parse_save_every(cfg.save_every)
        self.fingerprint = {**self.method.fingerprint(cfg), "data_list_sha256": self.data.data_list_sha256,
                            "held_out_data_sha256": self.data.held_out_record.get("held_out_data_sha256")}
        super().__init__(cfg, env, self.method, self.data.total_steps)
        self.teacher_cache: list = []
        self.last_eval: tuple[int, float | None] = (-1, None)
        self.held_out_loader = DataLoader(
            EvalFrames(self.data.held_out, cfg.image_size), batch_size=self.data.plan.micro_batch,
            num_workers=cfg.num_workers,
        )

    # -- state -------------------------------------------------------------------------------------------------
    def _model(self):
        """The student without its DDP wrapper (what checkpoints, evaluation and export see)."""
        return self.student.module if isinstance(self.student, DistributedDataParallel) else self.student

    def _payload(self) -> dict:
        return {
            "step": self.step,
            "model": self._model().state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": ckpt.rng_state(),
            "config": self.cfg.to_dict(),
            "fingerprint": self.fingerprint,
            "world_size": self.env.world_size,
        }

    def _find_resume_point(self) -> tuple[Path, dict] | None:
        """The checkpoint --resume continues from, checked against this run's settings before anything is written."""
        found = ckpt.load_latest_valid(self.run_dir)
        if found is None:
            if self.cfg.resume != "auto":
                raise ConfigError(f"--resume: no valid checkpoint in {self.run_dir / 'checkpoints'}; nothing was "
                                  "changed. Start a new run without --resume, or pass --resume auto to start from "
                                  "step 0 when there is nothing to resume")
            log.warning("--resume auto: no valid checkpoint in %s; starting from step 0", self.run_dir)
            return None
        state = found[1]
        check_resume_compatible(state["config"], self.cfg, self.method.resume_fields)
        saved_fingerprint = state.get("fingerprint", {})
        changed = [k for k, v in self.fingerprint.items() if saved_fingerprint.get(k) != v]
        if changed:
            raise ConfigError(f"--resume: {', '.join(changed)} differ from the run in {self.run_dir} (the teacher's "
                              "weights, the --held-out-data frames or the frame list changed); use the original "
                              "files or a new --out")
        return found

    def _restore(self, found: tuple[Path, dict]) -> None:
        path, state = found
        self.student.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        _match_state_layout(self.optimizer)
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        ckpt.set_rng_state(state["rng"])
        self.step = int(state["step"])
        if self.env.is_main:
            _truncate_metrics(self.metrics_path, self.step)
        log.info("resumed from %s (step %d)", path, self.step)

    def _reset_run_files(self) -> None:
        """Starting at step 0 inside an existing run folder: drop stale metrics and unusable checkpoints."""
        if self.env.is_main:
            self.metrics_path.unlink(missing_ok=True)
            for old in ckpt.list_checkpoints(self.run_dir):
                old.rename(old.with_name(old.name + ".invalid"))
        barrier(self.env)

    def _prepare_run_dir(self) -> None:
        existing = ckpt.list_checkpoints(self.run_dir)
        if existing and not self.cfg.resume:
            raise ConfigError(
                f"--out {self.run_dir} already holds checkpoints ({existing[-1].name}); pass --resume to continue "
                "that run, or choose a new --out"
            )
        barrier(self.env)
        if self.env.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir / "config.yaml", yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
            self.data.corpus.write_skipped(self.run_dir / "skipped_files.txt")
            if not self.cfg.resume:
                self.metrics_path.unlink(missing_ok=True)

    # -- logging -----------------------------------------------------------------------------------------------
    def _log(self, record: dict) -> None:
        if self.env.is_main:
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def _evaluate(self, kind: str) -> float | None:
        if not self.data.held_out:
            return None
        r2 = None
        if self.env.is_main:
            r2 = held_out_r2(self.teacher, self._model(), self.held_out_loader, self.teacher_cache, self.env.device,
                             self.amp_dtype, self.method)
            self._log({"step": self.step, "event": kind, "held_out_r2": r2, "held_out_images": len(self.data.held_out)})
        barrier(self.env)
        self.last_eval = (self.step, r2)
        return r2

    # -- training ----------------------------------------------------------------------------------------------
    def _due_checkpoint(self) -> bool:
        if self.step >= self.data.total_steps:
            return True
        if self.save_unit == "steps":
            return self.step % self.save_every == 0
        spe = self.data.plan.steps_per_epoch
        return self.step % (spe * self.save_every) == 0

    def _save(self) -> None:
        if self.env.is_main:
            ckpt.save_checkpoint(self.run_dir, self.step, self._payload(), self.cfg.keep_last)
        barrier(self.env)

    def run(self) -> dict:
        found = self._find_resume_point() if self.cfg.resume else None
        self._prepare_run_dir()
        if found is not None:
            self._restore(found)
        elif self.cfg.resume:
            self._reset_run_files()
        start_step = self.step
        r2_start = self._evaluate("eval") if start_step == 0 else None
        if self.env.distributed:
            self.student = DistributedDataParallel(self.student)
        self.student.train()
        plan = self.data.plan
        dataset = self.method.train_dataset(self.data.train, self.cfg)
        attach_frame_cache(dataset, self.cfg.num_workers)  # decode each file once, not once per epoch
        loader = DataLoader(
            dataset,
            batch_sampler=_MicroBatches(plan, start_step, self.data.total_steps),
            num_workers=self.cfg.num_workers, pin_memory=self.env.device.type == "cuda",
            persistent_workers=False,
        )
        progress = TrainProgress(self.data.total_steps, start_step, enabled=self.env.is_main and not self.cfg.quiet)
        t_start = time.perf_counter()
        with progress:
            pending: list[torch.Tensor] = []
            t_step = time.perf_counter()
            for images in loader:
                pending.append(images)
                if len(pending) < plan.accum_steps:
                    continue
                loss = mean_across_ranks(self.train_step(pending), self.env)
                pending = []
                now = time.perf_counter()
                images_per_s = self.cfg.batch_size / max(now - t_step, 1e-9)
                t_step = now
                progress.update(self.step, loss, images_per_s)
                if self.step % self.cfg.log_every == 0 or self.step == self.data.total_steps:
                    self._log({"step": self.step, "epoch": (self.step - 1) // plan.steps_per_epoch, "loss": loss,
                               "lr": self.scheduler.get_last_lr()[0], "images_per_s": images_per_s})
                if self.cfg.eval_every and self.step % self.cfg.eval_every == 0:
                    self._evaluate("eval")
                if self._due_checkpoint():
                    self._save()
                    if not self.cfg.eval_every:
                        self._evaluate("eval")
        elapsed = time.perf_counter() - t_start
        return self._finish(r2_start, elapsed, start_step)

    def _finish(self, r2_start: float | None, elapsed: float, start_step: int) -> dict:
        in_sync = params_in_sync(self.student, self.env)
        model = self._model()
        r2_end = self.last_eval[1] if self.last_eval[0] == self.step else self._evaluate("eval")
        summary = {
            "steps": self.step,
            "steps_this_session": self.step - start_step,
            "seconds_this_session": round(elapsed, 2),
            "images_per_s": round(self.cfg.batch_size * (self.step - start_step) / elapsed, 2) if elapsed else None,
            "train_images": len(self.data.train),
            "held_out_images": len(self.data.held_out),
            **self.data.held_out_record,  # where the R² frames come from (--held-out-data or a split of --data)
            "skipped_files": len(self.data.corpus.skipped),
            "duplicates_removed": len(self.data.corpus.duplicates),
            "data_list_sha256": self.data.data_list_sha256,
            "unlisted_frames_dropped": self.data.unlisted,
            "held_out_r2_start": r2_start,
            "held_out_r2_end": r2_end,
            "world_size": self.env.world_size,
            "ranks_in_sync": in_sync,
            "accum_steps": self.data.plan.accum_steps,
            "micro_batch": self.data.plan.micro_batch,
            "allocator": self.allocator,
        }
        if self.env.is_main:
            self.method.save(self.run_dir, model, self.cfg, self.teacher, summary)
            self._log({"step": self.step, "event": "finished", **summary})
        barrier(self.env)
        return summary


def run_distillation(cfg: DistillConfig, method: DistillMethod | None = None) -> dict:
    """Validate the config, run (or resume) distillation in this process group, return the summary."""
    cfg.validate()
    env = init_distributed()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return Distiller(cfg, env, method).run()
    finally:
        shutdown(env)
