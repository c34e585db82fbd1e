"""GPU check of `pocus distill`'s training step: bf16 images/s, TFLOP/s against the GPU's bf16 peak, peak memory,
torch.compile off and on, and a 2-process DDP run on one GPU when NCCL allows it.

Run it through check.sh (which picks or sets up Python and holds the time limit). It writes check.json and check.md
(`--dry-run`: dry_run.json / dry_run.md) into --out after every phase, so a run cut short still leaves its results.

What is measured is the loop's own step, called, not copied (trainer.TrainStep.train_step, with the loop's
channels_last student, fused AdamW, mixup and one host sync per step): the method's loss (`--objective`) under bf16
autocast per micro-batch, AdamW + schedule once per global batch. Teacher weights are random (no DINOv3 weights
here; the FLOPs and speed are the same) and the inputs are random tensors already on the GPU: data loading is not
part of this number. FLOPs are counted with
torch.utils.flop_counter on one micro-batch (teacher forward, student forward and backward; the optimizer's
elementwise work is not counted). The share of peak is against the bf16 peak of the GPU: 790 TFLOP/s on an H200
(measured there), else a dense bf16 matmul timed at the start of the run (`--peak-tflops` overrides). Order: eager,
2-process DDP, then torch.compile, whose compile time is the hardest to bound. `--dry-run` runs the same phases on
CPU at CI size (tiny teacher, 64 px).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(Path(__file__).resolve().parent)]  # the checkout (installed or not), check_report

import torch  # noqa: E402
from check_report import write_report  # noqa: E402

from pocus_edge.distill.config import DistillConfig  # noqa: E402
from pocus_edge.distill.ddp import DistEnv  # noqa: E402
from pocus_edge.distill.trainer import OBJECTIVES, TrainStep  # noqa: E402

H200_BF16_PEAK_TFLOPS = 790.0  # dense bf16 8192^3 matmul measured on an H200 here (/work/.library/device/KINDS.md)
TINY_TEACHER = {"depth": 3, "embed_dim": 48, "num_heads": 2}  # as tests/conftest.py


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, CI size: tiny teacher, resnet18, 64 px, few steps")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "gpu", help="folder for the JSON and Markdown")
    p.add_argument("--deadline-s", type=float, default=450.0, help="stop starting new work after this many seconds")
    p.add_argument("--objective", default="token-mse", help="the distill objective whose step is measured")
    p.add_argument("--image-size", type=int)
    p.add_argument("--global-batch", type=int)
    p.add_argument("--micro-batch", type=int, help="per process; the global batch is reached by accumulation")
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--steps", type=int, help="timed optimizer steps per run")
    p.add_argument("--peak-tflops", type=float,
                   help="the device's bf16 peak [790 on an H200, else a timed bf16 matmul; none on CPU]")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--no-ddp", action="store_true")
    p.add_argument("--ddp-timeout-s", type=float, default=240.0)
    p.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what the DDP workers are started with
    dry = args.dry_run
    defaults = {"image_size": 64 if dry else 256, "global_batch": 8 if dry else 512, "micro_batch": 4 if dry else 128,
                "warmup_steps": 1 if dry else 3, "steps": 2 if dry else 20}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def distill_config(args: argparse.Namespace) -> DistillConfig:
    """The `pocus distill` settings of the measured run (ViT-B/16 -> ResNet-50; tiny in a dry run)."""
    model = ({"teacher": "vit_small_patch16_dinov3", "teacher_kwargs": TINY_TEACHER, "student": "resnet18",
              "head_hidden": 64} if args.dry_run else
             {"teacher": "vit_base_patch16_dinov3", "student": "resnet50", "head_hidden": 4096})
    extra = {"mask_block": 16} if args.objective == "masked-consistency" and args.dry_run else {}
    return DistillConfig(data=["synthetic"], out=str(args.out / "unused"), teacher_weights="random",
                         image_size=args.image_size, batch_size=args.global_batch, max_micro_batch=args.micro_batch,
                         max_steps=10_000, warmup_steps=0, precision="bf16", objective=args.objective, **model,
                         **extra).validate()


class Bench:
    """The distill loop's TrainStep and fixed random micro-batches on one device."""

    def __init__(self, args: argparse.Namespace, device: torch.device, world_size: int = 1, rank: int = 0):
        self.cfg = distill_config(args)
        self.device = device
        per_process = args.global_batch // world_size
        if per_process % args.micro_batch:
            raise SystemExit(f"--global-batch {args.global_batch} over {world_size} process(es) is not a multiple of "
                             f"--micro-batch {args.micro_batch}")
        self.accum = per_process // args.micro_batch
        env = DistEnv(rank=rank, world_size=world_size, local_rank=0, device=device)
        self.trainer = TrainStep(self.cfg, env, OBJECTIVES[self.cfg.objective](), total_steps=10_000)
        g = torch.Generator().manual_seed(0)
        size = (args.micro_batch, 3, args.image_size, args.image_size)
        self.batches = [torch.randn(size, generator=g).to(device) for _ in range(self.accum)]

    def loss(self, images: torch.Tensor) -> torch.Tensor:
        t = self.trainer
        with torch.autocast(self.device.type, dtype=t.amp_dtype, enabled=t.amp_dtype is not None):
            return t.method.loss(t.teacher, t.student, images)

    def step(self) -> float:
        """One optimizer step of the distill loop over the accumulated micro-batches."""
        return self.trainer.train_step(self.batches)

    def release(self) -> None:
        """Drop models, optimizer state and batches (the DDP processes need the memory)."""
        self.trainer = None
        self.batches = []

    def count_flops(self) -> dict:
        """FLOPs per image: teacher forward alone, and the whole micro-batch step (forward + backward)."""
        from torch.utils.flop_counter import FlopCounterMode

        images, t = self.batches[0], self.trainer
        with FlopCounterMode(display=False) as teacher_count, torch.autocast(self.device.type, dtype=torch.bfloat16):
            t.teacher(images)
        with FlopCounterMode(display=False) as step_count:
            self.loss(images).backward()
        t.optimizer.zero_grad(set_to_none=True)
        n = images.shape[0]
        per_image = step_count.get_total_flops() / n
        return {"train_step_per_image": per_image, "teacher_forward_per_image": teacher_count.get_total_flops() / n,
                "per_optimizer_step": per_image * n * self.accum}


def matmul_bf16_tflops(device: torch.device, seconds: float = 2.0, n: int = 8192) -> float:
    """Dense bf16 n^3 matmul throughput on this GPU, timed for about `seconds` (the practical peak)."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(10):
            a @ b
        done += 10
        sync(device)
    return 2 * n**3 * done / (time.perf_counter() - t0) / 1e12


def bf16_peak(args: argparse.Namespace, device: torch.device) -> tuple[float | None, str, float | None]:
    """(peak TFLOP/s the share is taken against, where it comes from, the matmul measured here or None)."""
    if device.type != "cuda":
        return args.peak_tflops, "--peak-tflops" if args.peak_tflops else "none on CPU", None
    measured = round(matmul_bf16_tflops(device), 1)
    if args.peak_tflops:
        return args.peak_tflops, "--peak-tflops", measured
    if "H200" in torch.cuda.get_device_name(device):
        return H200_BF16_PEAK_TFLOPS, "H200 bf16 matmul peak measured in this workplace", measured
    return measured, "bf16 8192^3 matmul timed at the start of this run", measured


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_gib(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)}
    import resource

    return {"peak_host_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def timed_steps(bench: Bench, args, deadline: float, agree=None) -> dict:
    """Warm-up steps (the first one timed apart: it includes compilation), then timed steps until the deadline.

    agree(out_of_time) -> bool makes the processes of a DDP run stop at the same step (one would hang otherwise).
    """
    t0 = time.perf_counter()
    bench.step()
    sync(bench.device)
    first = time.perf_counter() - t0
    for _ in range(args.warmup_steps - 1):
        bench.step()
    sync(bench.device)
    done, t0 = 0, time.perf_counter()
    for _ in range(args.steps):
        out_of_time = time.monotonic() > deadline
        if (agree(out_of_time) if agree else out_of_time):
            break
        bench.step()
        done += 1
    sync(bench.device)
    seconds = time.perf_counter() - t0
    if done == 0:
        return {"status": "skipped", "reason": "out of time after the warm-up", "first_step_s": round(first, 3)}
    return {"status": "ok", "first_step_s": round(first, 3), "steps_timed": done, "step_s": round(seconds / done, 4),
            "images_per_s": round(args.global_batch * done / seconds, 2)}


def with_flops(result: dict, flops: dict | None, peak: float | None) -> dict:
    if result.get("status") == "ok" and flops:
        tflops = flops["train_step_per_image"] * result["images_per_s"] / 1e12
        result["tflops"] = float(f"{tflops:.4g}")  # significant digits: a CPU dry run is ~0.001 TFLOP/s, not 0.0
        result["share_of_bf16_peak"] = round(tflops / peak, 4) if peak else None
    return result


def environment(device: torch.device) -> dict:
    import timm

    env = {"torch": torch.__version__, "timm": timm.__version__, "python": platform.python_version(),
           "device": str(device), "host": socket.gethostname(), "cpu_count": os.cpu_count(),
           "nccl_available": torch.distributed.is_available() and torch.distributed.is_nccl_available(),
           "cudnn_benchmark": torch.backends.cudnn.benchmark}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   capability=f"{props.major}.{props.minor}", bf16_supported=torch.cuda.is_bf16_supported(),
                   cuda=torch.version.cuda)
    try:
        env["git_commit"] = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                                           text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        env["git_commit"] = None
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_worker(args: argparse.Namespace) -> int:
    """One rank of the 2-process run; both ranks share GPU 0 (NCCL may refuse that: the reason is recorded)."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    rank = int(os.environ["RANK"])
    result: dict = {"rank": rank}
    try:
        device = torch.device("cuda", 0) if torch.cuda.is_available() and not args.dry_run else torch.device("cpu")
        backend = "nccl" if device.type == "cuda" else "gloo"
        result["backend"] = backend
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=60))
        bench = Bench(args, device, world_size=2, rank=rank)
        student = bench.trainer.student
        bench.trainer.student = DistributedDataParallel(student, device_ids=[0] if device.type == "cuda" else None)

        def agree(out_of_time: bool) -> bool:  # stop when either rank is out of time
            flag = torch.tensor([float(out_of_time)], device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            return bool(flag.item())

        reset_peak(device)
        result.update(timed_steps(bench, args, time.monotonic() + args.deadline_s, agree=agree))
        result.update(peak_memory_gib(device), accum_steps=bench.accum, micro_batch=args.micro_batch)
        dist.barrier()
        dist.destroy_process_group()
    except Exception as exc:  # recorded, not raised: the parent reports why DDP could not run
        result.update(status="failed", reason=f"{type(exc).__name__}: {str(exc)[:600]}")
    args.result.write_text(json.dumps(result))
    return 0 if result.get("status") == "ok" else 1


def run_ddp(args: argparse.Namespace, remaining: float) -> dict:
    """Two processes on one device; the parent waits at most --ddp-timeout-s (NCCL can hang instead of failing)."""
    port = free_port()
    procs, results = [], []
    forwarded = [a for a in args.argv if a != "--no-ddp"]
    limit = max(30.0, min(args.ddp_timeout_s, remaining - 10))
    for rank in range(2):
        result = args.out / f".ddp_rank{rank}.json"
        result.unlink(missing_ok=True)
        results.append(result)
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port)}
        cmd = [sys.executable, __file__, *forwarded, "--ddp-worker", "--result", str(result),
               "--deadline-s", str(limit - 20)]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    t0 = time.monotonic()
    stderr_tail = ""
    for proc in procs:
        try:
            _, err = proc.communicate(timeout=max(1.0, limit - (time.monotonic() - t0)))
            stderr_tail = stderr_tail or (err or "").strip()[-600:]
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            return {"status": "timed out", "reason": f"the 2 processes did not finish in {limit:.0f} s"}
    ranks = [json.loads(r.read_text()) if r.is_file() else {"status": "failed", "reason": stderr_tail} for r in results]
    for r in results:
        r.unlink(missing_ok=True)
    failed = [r for r in ranks if r.get("status") != "ok"]
    backend = ranks[0].get("backend", "nccl" if torch.cuda.is_available() and not args.dry_run else "gloo")
    if failed:
        return {"status": "not possible" if backend == "nccl" else "failed", "backend": backend,
                "reason": f"{backend} refused or failed 2 processes on one device: {failed[0].get('reason')}"}
    out = {k: v for k, v in ranks[0].items() if k not in ("rank",)}
    out["per_rank_memory"] = [{k: v for k, v in r.items() if k.startswith("peak_")} for r in ranks]
    return out


def attempt(run: dict, measure) -> dict:
    """`run` updated with what `measure()` returns, or with why it failed (a failure is a result, not a crash)."""
    try:
        run.update(measure())
    except Exception as exc:
        run.update(status="failed", reason=f"{type(exc).__name__}: {str(exc)[:600]}")
    return run


def compiled_run(bench: Bench, args: argparse.Namespace, deadline: float) -> dict:
    """The same step with teacher and student under torch.compile (dry run: dynamo + AOT autograd, no codegen)."""
    backend = "aot_eager" if args.dry_run else "inductor"

    def measure() -> dict:
        t = bench.trainer
        t.teacher, t.student = torch.compile(t.teacher, backend=backend), torch.compile(t.student, backend=backend)
        reset_peak(bench.device)
        return {**timed_steps(bench, args, deadline), **peak_memory_gib(bench.device)}

    return attempt({"name": "torch.compile bf16", "backend": backend}, measure)


def new_report(args: argparse.Namespace, bench: Bench, peak: tuple) -> dict:
    return {
        "schema": "pocus-edge gpu check 2", "dry_run": args.dry_run,
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["benchmarks/gpu/check.sh", *args.argv]),
        "environment": environment(bench.device), "peak_tflops": peak[0], "peak_source": peak[1],
        "matmul_bf16_tflops": peak[2],
        "setup": {"teacher": bench.cfg.teacher, "teacher_weights": "random", "student": bench.cfg.student,
                  "image_size": args.image_size, "objective": args.objective, "global_batch": args.global_batch,
                  "micro_batch": args.micro_batch, "accum_steps": bench.accum, "precision": "bf16",
                  "warmup_steps": args.warmup_steps, "timed_steps": args.steps},
        "flops": None, "runs": [],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.ddp_worker:
        return ddp_worker(args)
    start = time.monotonic()
    deadline = start + args.deadline_s
    if args.dry_run:
        device = torch.device("cpu")
        torch.set_num_threads(1)
    elif torch.cuda.is_available():
        device = torch.device("cuda", 0)
    else:
        print("error: no CUDA GPU is visible; run with --dry-run on CPU", file=sys.stderr)
        return 2
    bench = Bench(args, device)
    report = new_report(args, bench, bf16_peak(args, device))
    peak = report["peak_tflops"]

    def record(run: dict, pending: bool = False) -> None:
        """Add a finished run (replacing its placeholder) or, with pending, a placeholder a kill would leave."""
        if report["runs"] and report["runs"][-1].get("pending"):
            report["runs"].pop()
        if pending:
            run = {**run, "status": "did not finish", "pending": True,
                   "reason": "still running when the time limit stopped the check"}
        report["runs"].append(with_flops(run, report["flops"], peak))
        report["elapsed_s"] = round(time.monotonic() - start, 1)
        write_report(report, args.out, "dry_run" if args.dry_run else "check")
        if not pending:
            print(json.dumps(run), flush=True)

    record({"name": "eager bf16"}, pending=True)
    report["flops"] = bench.count_flops()
    reset_peak(device)
    record(attempt({"name": "eager bf16"}, lambda: {**timed_steps(bench, args, deadline),
                                                    **peak_memory_gib(device)}))
    eager_ok = report["runs"][0]["status"] == "ok"
    bench.release()  # the DDP processes need the memory
    if device.type == "cuda":
        torch.cuda.empty_cache()
    phases = (("DDP 2 processes on one device", args.no_ddp, "--no-ddp", 45,
               lambda: run_ddp(args, deadline - time.monotonic())),
              ("torch.compile bf16", args.no_compile, "--no-compile", 60,  # last: its compile is hardest to bound
               lambda: compiled_run(Bench(args, device), args, deadline)))
    for name, off, flag, needs_s, measure in phases:
        if off:
            record({"name": name, "status": "skipped", "reason": flag})
        elif time.monotonic() > deadline - needs_s:
            record({"name": name, "status": "skipped", "reason": "out of time"})
        else:
            record({"name": name}, pending=True)
            record({"name": name, **measure()})
    return 0 if eager_ok else 1


if __name__ == "__main__":
    sys.exit(main())
