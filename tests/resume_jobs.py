"""Small jobs on the 4-layer `tiny4` model (fixture `tiny4_store`) that the crash-and-resume tests kill and resume.

Each entry: the recipe's stages, the checkpoint unit after which the failpoint kills the job,
and where the resumed run must say it picked up.
"""

from __future__ import annotations

SMALL = {"calibration": {"samples": 4, "seqlen": 64},
         "eval": {"datasets": ["wiki"], "max_tokens": 256, "window": 128}}
GPTQ = [{"quantize": {"weights": {"bits": 4, "strategy": "group", "group_size": 32, "method": "gptq"}}}]
OSTQUANT = [{"ostquant": {"steps": 6, "qsur_samples": 0}},
            {"quantize": {"weights": {"bits": 4, "strategy": "channel", "method": "rtn"}}}]
OSTQUANT_WARM = [{"ostquant": {"steps": 3, "qsur_samples": 0, "warm_start": {"epochs": 2, "samples": 4, "batch_size": 2}}},
                 {"quantize": {"weights": {"bits": 4, "strategy": "channel", "method": "rtn"}}}]
PROSPARSE = [{"prosparse": {"lambdas": [0.0, 0.5], "stage_steps": [3, 3], "warmup_steps": 1, "finetune": "hft",
                            "sparsity_eval_tokens": 128}},
             {"quantize": {"weights": {"bits": 4, "strategy": "channel", "method": "rtn"}}}]
AFFINEQUANT = [{"affinequant": {"epochs": 2, "batch_size": 2, "weights": {"bits": 4, "symmetric": True, "strategy": "channel"},
                                 "ln_matrix": "dense"}}]

KILLS = {
    "affinequant": (AFFINEQUANT, "s0:layer:00001", "stage 1/1 affinequant at layer 3 of 4"),
    "gptq": (GPTQ, "s0:layer:00001", "stage 1/1 quantize at layer 3 of 4"),
    "ostquant": (OSTQUANT, "s0:step:00003", "stage 1/2 ostquant after step 3"),
    "ostquant-warm-start": (OSTQUANT_WARM, "s0:layer:00001", "stage 1/2 ostquant at layer 3 of 4"),
    "prosparse": (PROSPARSE, "s0:step:00004", "stage 1/2 prosparse after step 4"),
}
