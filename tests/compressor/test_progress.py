"""The job progress record: ETA from the stage's own clock, and the dict form the jobs table stores."""

import pytest

from compressor.progress import JobProgress, ProgressEvent, ProgressTracker


def test_eta_extrapolates_the_stage_so_far():
    tracker = ProgressTracker()
    tracker.update(ProgressEvent("stage_start", "stage 1/1: quantize", stage="quantize", time=100.0))
    p = tracker.update(ProgressEvent("layer", "layer 1/4", stage="quantize", layer=0, num_layers=4, fraction=0.25, time=110.0))
    assert p == JobProgress(stage="quantize", layer=0, num_layers=4, fraction=0.25, eta_s=pytest.approx(30.0), message="layer 1/4")
    # a new stage restarts the clock
    tracker.update(ProgressEvent("stage_start", "eval", stage="eval:wiki", time=200.0))
    p = tracker.update(ProgressEvent("step", "wiki: 1/2 windows", stage="eval:wiki", fraction=0.5, time=204.0))
    assert p.eta_s == pytest.approx(4.0)
    last = tracker.update(ProgressEvent("step", "wiki: 2/2 windows", stage="eval:wiki", fraction=1.0, time=208.0))
    assert last.eta_s is None


def test_dict_form_has_the_progress_column_keys():
    assert JobProgress(stage="load").to_dict() == {
        "stage": "load", "layer": None, "num_layers": None, "fraction": None, "eta_s": None, "message": None,
    }
