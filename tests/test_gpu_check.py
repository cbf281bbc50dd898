"""bench/gpu_check.py, the parts a CPU can check: arguments, the no-CUDA exit, the per-part JSON writer, CPU-row matching."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench import gpu_check


def test_unknown_part_is_refused_naming_the_allowed_ones(capsys):
    with pytest.raises(SystemExit) as exit_:
        gpu_check.parse_args(["--parts", "machine,kernels"])
    assert exit_.value.code == 2
    assert "--parts: unknown kernels; allowed: machine, jobs, kernel_correctness, kernel_timings" in capsys.readouterr().err
    assert gpu_check.parse_args(["--parts", "jobs", "--quick"]).parts == ["jobs"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: the script would run for real")
@pytest.mark.parametrize("interpret", ["1", None])
def test_without_cuda_it_exits_with_a_message_and_writes_nothing(tmp_path, capsys, monkeypatch, interpret):
    if interpret is None:
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    else:
        monkeypatch.setenv("TRITON_INTERPRET", interpret)
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert ("TRITON_INTERPRET=1 is set" if interpret else "no CUDA device visible") in err
    assert "Traceback" not in err and not out.exists()


def test_a_failing_part_is_recorded_and_the_rest_still_run(tmp_path):
    out, result, snapshots = tmp_path / "r.json", {}, []

    def write() -> None:
        out.write_text(json.dumps(result, default=str))
        snapshots.append(json.loads(out.read_text()))

    def broken() -> None:
        raise RuntimeError("kernel exploded")

    failed = gpu_check.run_parts({"machine": lambda: {"gpu": "x"}, "jobs": broken, "kernel_timings": lambda: [1, 2]},
                                 result, write, budget_s=1e9)
    assert failed == ["jobs"]
    final = json.loads(out.read_text())
    assert final["machine"] == {"gpu": "x"} and final["kernel_timings"] == [1, 2]
    assert final["jobs"]["error"] == "RuntimeError: kernel exploded" and "broken" in final["jobs"]["trace"]
    assert [list(s) for s in snapshots] == [["machine", "seconds"], ["machine", "seconds", "jobs"],
                                            ["machine", "seconds", "jobs", "kernel_timings"]]  # written after every part


def test_parts_after_the_budget_are_skipped_and_say_so(tmp_path):
    ticks = iter([0.0, 0.0, 100.0, 100.0, 500.0])  # start, part 1: checked, started, ended; part 2 checked at 500 s
    result: dict = {}
    gpu_check.run_parts({"machine": lambda: "ok", "jobs": lambda: pytest.fail("must not run")}, result,
                        lambda: None, budget_s=480, clock=lambda: next(ticks))
    assert result["machine"] == "ok"
    assert result["jobs"] == {"skipped": "time budget: 500 s spent of 480 s before this part"}


def test_each_job_finds_its_cpu_row_in_quality_json():
    quality = json.loads(Path(gpu_check.QUALITY_JSON).read_text())
    found = {}
    for name, recipe, overrides in gpu_check.JOBS:
        row, differs = gpu_check.cpu_row(gpu_check.job_recipe(recipe, overrides, 16384)["stages"], quality)
        found[name] = (row["method"], row["activations"], row["kv"], row["group"], differs)
    assert found == {
        "rtn-w4a16-g64": ("rtn", 16, 16, 64, []),
        "gptq-w4a16-g64": ("gptq", 16, 16, 64, []),
        "hadamard-gptq-w4a4kv4": ("hadamard-gptq-clip-best", 4, 4, None, []),  # the recipe carries the calibration-best clipping
        "ostquant-w4a16-20-steps": ("ostquant", 16, 16, None, ["[0].OSTQuantConfig.steps: gpu 20, cpu 60"]),
    }
