"""The automatic mixed-precision search keeps a float layer only when it raises the search-part agreement, and
records every try (quantize_mixed._search), on a scripted job whose agreement per float-layer set is a table."""

from __future__ import annotations

import pytest

from pocus_edge.export.base import ExportError
from pocus_edge.export.quantize_mixed import _search

# agreement (Dice) of each set of float layers; the ranking is a, b, c, d
TABLE = {(): 0.90, ("a",): 0.93, ("a", "b"): 0.92, ("a", "c"): 0.96, ("a", "b", "c"): 0.955, ("a", "c", "d"): 0.97}


class ScriptedJob:
    primary = "dice_mean"
    layers = ["a", "b", "c", "d"]
    eval_frames = [0, 1, 2]

    def __init__(self, target: float) -> None:
        self.thresholds = {"dice_mean": ["min", target]}
        self.tried: list[tuple[str, ...]] = []

    def full(self, method):
        return ()

    def mixed(self, method, floats):
        return tuple(floats)

    def score(self, model, count=None):
        self.tried.append(model)
        return {"dice_mean": TABLE.get(model, 0.5), "output_sqnr_db": 20.0}

    def passes(self, metrics):
        return metrics["dice_mean"] >= self.thresholds["dice_mean"][1]


def _report():
    return {"layers": [{"layer": n} for n in ScriptedJob.layers]}


def test_a_ranked_layer_that_does_not_help_is_tried_recorded_and_not_kept():
    job = ScriptedJob(0.95)
    floats, record = _search(job, "minmax", {"limit": 3}, _report())
    assert floats == ["a", "c"]  # old search: ["a", "b", "c"] (b lowered the agreement and stayed in float)
    assert record["result"] == "target met"
    assert [(s["layer"], s["kept"]) for s in record["steps"]] == [("a", True), ("b", False), ("c", True)]
    b = record["steps"][1]
    assert (b["dice_mean_before"], b["dice_mean_after"]) == (0.93, 0.92) and "float_layers" not in b
    assert record["steps"][2]["float_layers"] == ["a", "c"]
    assert job.tried == [(), ("a",), ("a", "b"), ("a", "c")]


def test_the_failure_names_the_best_kept_set_and_every_try():
    job = ScriptedJob(0.99)
    with pytest.raises(ExportError, match=r"best 0\.97 with 3 layer\(s\) in float \(a, c, d\); tried in order: "
                                          r"a \(kept\), b \(no gain\), c \(kept\), d \(kept\)"):
        _search(job, "minmax", {"limit": 3}, _report())


def test_tries_are_capped_at_three_per_allowed_layer():
    job = ScriptedJob(0.95)
    report = {"layers": [{"layer": n} for n in ("b", "c", "d", "a")]}  # three useless layers ranked first
    with pytest.raises(ExportError, match=r"tried in order: b \(no gain\), c \(no gain\), d \(no gain\) "
                                          r"\(--max-float-layers 1 of 4, at most 3 tries\)"):
        _search(job, "minmax", {"limit": 1}, report)
    assert job.tried == [(), ("b",), ("c",), ("d",)]


class ConvertedJob(ScriptedJob):
    """A TFLite-like job: `score` simulates, `score_converted` runs the converted model (here: a fixed value)."""

    def __init__(self, target: float, converted: float) -> None:
        super().__init__(target)
        self.converted = converted

    def score_converted(self, model, count=None):
        return {"dice_mean": self.converted, "output_sqnr_db": 30.0}


def test_full_int8_ships_when_the_converted_model_meets_the_target_the_simulation_missed():
    job = ConvertedJob(0.95, converted=0.96)  # simulated full int8: 0.90
    floats, record = _search(job, "minmax", {"limit": 3}, _report())
    assert floats == [] and job.tried == [()]  # no search
    assert record["full_int8"]["dice_mean"] == 0.90 and record["full_int8_converted"]["dice_mean"] == 0.96
    assert record["result"] == "full int8 met the target (converted model; the simulation missed it)"


def test_the_search_runs_when_the_converted_model_misses_too():
    job = ConvertedJob(0.95, converted=0.91)
    floats, record = _search(job, "minmax", {"limit": 3}, _report())
    assert floats == ["a", "c"] and record["full_int8_converted"]["dice_mean"] == 0.91
    assert record["result"] == "target met"
    with pytest.raises(ExportError, match=r"full int8 \(minmax calibration\) dice_mean 0\.9 \(converted \.tflite: "
                                          r"0\.91\); best 0\.97"):
        _search(ConvertedJob(0.99, converted=0.91), "minmax", {"limit": 3}, _report())

