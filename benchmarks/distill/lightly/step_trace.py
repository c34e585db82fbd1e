"""Per-step trace of `pocus distill`: wall seconds, minor page faults, context switches and CPU time of each step.

Finds where the occasional slow step goes (it found glibc re-faulting freed activations; README.md here).
Counts are this process's (all its threads), not the loader workers'.
Usage: .venv/bin/python benchmarks/distill/lightly/step_trace.py OUT.jsonl -- <pocus distill arguments>
"""

import json
import resource
import sys
import time

import pocus_edge.distill.trainer as trainer
from pocus_edge.cli import main


def traced(step_fn, rows: list):
    """`TrainStep.train_step` wrapped to append one row per optimizer step to ROWS."""
    def train_step(self, micro_batches):
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        loss = step_fn(self, micro_batches)
        r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        rows.append({"step": self.step, "s": round(t1 - t0, 3), "minflt": r1.ru_minflt - r0.ru_minflt,
                     "nivcsw": r1.ru_nivcsw - r0.ru_nivcsw, "nvcsw": r1.ru_nvcsw - r0.ru_nvcsw,
                     "user": round(r1.ru_utime - r0.ru_utime, 3), "sys": round(r1.ru_stime - r0.ru_stime, 3)})
        return loss
    return train_step


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[2] != "--":
        sys.exit("usage: step_trace.py OUT.jsonl -- <pocus distill arguments>")
    out, rows = sys.argv[1], []
    trainer.TrainStep.train_step = traced(trainer.TrainStep.train_step, rows)
    sys.argv = ["pocus", "distill", *sys.argv[3:]]
    try:
        main()
    except SystemExit:
        pass
    with open(out, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
