"""The memory estimate against the measured peak RSS of real jobs on the bundled model (heavy).

Each job runs in its own process, as a worker's job process does, so the measured peak is
the job's and not the test session's (pytest, fixtures, models other tests loaded). The
estimate compared is the one the job itself wrote in its report (`execution.estimate_peak_mb`),
so it is for exactly the recipe that ran.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.heavy, pytest.mark.model]

REPO = Path(__file__).resolve().parents[3]
EVAL = {"datasets": ["wiki"], "max_tokens": 2048, "window": 512}
JOBS = {
    "rtn": {"stages": [{"quantize": {"weights": {"bits": 4, "strategy": "group", "group_size": 64}}}], "eval": EVAL},
    "gptq": {"stages": [{"quantize": {"weights": {"bits": 4, "strategy": "channel", "method": "gptq"}}}],
             "eval": EVAL, "calibration": {"samples": 16, "seqlen": 512}},
    "ostquant": {"stages": [{"ostquant": {"steps": 2, "qsur_samples": 0}},
                            {"quantize": {"weights": {"bits": 4, "strategy": "channel", "method": "gptq"}}}],
                 "eval": EVAL, "calibration": {"samples": 8, "seqlen": 512}},
}
SCRIPT = """
import json, sys
from pathlib import Path
from compressor.pipeline import run
from compressor.spec import JobSpec
spec = JobSpec.model_validate({"model": "smollm2-135m", "recipe": json.loads(sys.argv[1])})
run(spec, Path(sys.argv[2]), home=Path(sys.argv[3]), device="cpu")
"""


@pytest.mark.parametrize("name", list(JOBS))
def test_estimate_within_a_quarter_of_the_measured_peak(name, model_store, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(JOBS[name]), str(tmp_path), str(model_store)],
                   env=env, check=True, timeout=900)
    execution = json.loads((tmp_path / "report.json").read_text())["execution"]
    estimate, measured = execution["estimate_peak_mb"], execution["measured_peak_mb"]
    print(f"{name}: estimate {estimate:.0f} MB, measured peak RSS {measured:.0f} MB ({estimate / measured - 1:+.1%})")
    assert abs(estimate - measured) <= 0.25 * measured, (name, estimate, measured)
