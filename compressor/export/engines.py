"""The one rule table: which engines serve a checkpoint, by which path, and why not.

Decided from what the checkpoint says (config.json's `quantization_config`, its
`transform_config`, the manifest's runtime requirements), never from the recipe, so the same
rules answer for an artifact written by any tool. Torch-free: the service shows it too.

Facts behind the rules (shared/research/serving_formats.md, read from vLLM's compressed-tensors
loader): Hopper has no 4-bit tensor cores; W4A16 int (Marlin/Machete), W8A8 int8 and W8A8 FP8
serve on Ampere and newer (FP8 on Ampere as Marlin weight-only); int4-weight/FP8-activation
W4A8 is checked on exactly SM90; NVFP4 W4A4 needs Blackwell (elsewhere vLLM warns and runs the
weights as FP4 weight-only); MXFP4 is Blackwell's; int W4A4 (WNA4Int, Humming kernels) reads
pack-quantized int4 weights with symmetric int4 inputs on Ampere/Ada only; an int KV cache is a
serving flag, not a checkpoint scheme; online `input` transforms run in vLLM (tensor parallel 1
only), R3 (Q/K after RoPE) does not; transformers 5.24 ignores `transform_config`. Nothing
here was run on those engines in this project: the table states what their loaders select.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

TRANSFORMERS = "transformers"
VLLM_AMPERE = "vllm-ampere"  # sm80/sm86 (A100, A10, RTX 30xx); Ada (sm89) adds native FP8
VLLM_HOPPER = "vllm-hopper"  # sm90 (H100, H200)
VLLM_BLACKWELL = "vllm-blackwell"  # sm100 (B200)
ENGINES = (TRANSFORMERS, VLLM_AMPERE, VLLM_HOPPER, VLLM_BLACKWELL)
VLLM_ENGINES = (VLLM_AMPERE, VLLM_HOPPER, VLLM_BLACKWELL)


@dataclass(frozen=True)
class EngineSupport:
    """Whether `engine` serves the checkpoint; `path` names what it runs, `reason` why not (or what it gives up)."""

    engine: str
    serves: bool
    path: str | None = None
    reason: str | None = None


def _yes(engine: str, path: str, note: str | None = None) -> EngineSupport:
    return EngineSupport(engine, True, path, note)


def _no(engine: str, reason: str) -> EngineSupport:
    return EngineSupport(engine, False, None, reason)


def scheme_kind(group: dict[str, Any]) -> str:
    """A config group's serving shape: w4a16-int, w8a8-int8, w8a8-fp8, w4a8-fp8, nvfp4-a16, nvfp4-w4a4, mxfp4, ..."""
    w, a = group.get("weights") or {}, group.get("input_activations")
    wtype, wbits = w.get("type", "int"), int(w.get("num_bits", 16))
    if wtype == "float" and wbits == 4:
        fp4 = "mxfp4" if w.get("group_size") == 32 and w.get("strategy") == "group" else "nvfp4"
        return f"{fp4}-a16" if a is None else f"{fp4}-w4a4"
    if wtype == "float" and wbits == 8:
        return "w8a16-fp8" if a is None else "w8a8-fp8"
    if a is None:
        return "w4a16-int" if wbits <= 4 else f"w{wbits}a16-int"
    abits, atype = int(a.get("num_bits", 16)), a.get("type", "int")
    if atype == "float" and abits == 8:
        return "w4a8-fp8" if wbits == 4 else f"w{wbits}a8-fp8"
    if atype == "int" and abits == 8:
        return "w8a8-int8" if wbits == 8 else f"w{wbits}a8-int8"
    return f"w{wbits}a{abits}-{atype}"


def _vllm_for_scheme(kind: str, group: dict[str, Any], fmt: str | None) -> dict[str, EngineSupport]:
    a = group.get("input_activations") or {}
    if kind in ("w4a16-int", "w8a16-int"):
        return {e: _yes(e, "WNA16 (Marlin / Machete)") for e in VLLM_ENGINES}
    if kind == "w8a8-int8":
        if not a.get("symmetric", True):
            return {e: _no(e, "asymmetric int8 activations are not what vLLM's W8A8Int8 path is checked for here") for e in VLLM_ENGINES}
        return {e: _yes(e, "W8A8Int8 (CUTLASS scaled_mm)") for e in VLLM_ENGINES}
    if kind == "w8a8-fp8":
        return {VLLM_AMPERE: _yes(VLLM_AMPERE, "W8A16Fp8 (Marlin) fallback", "no FP8 tensor cores before Ada: weights FP8, activations run unquantized"),
                VLLM_HOPPER: _yes(VLLM_HOPPER, "W8A8Fp8 (CUTLASS)"),
                VLLM_BLACKWELL: _yes(VLLM_BLACKWELL, "W8A8Fp8 (CUTLASS)")}
    if kind == "w8a16-fp8":
        return {e: _yes(e, "W8A16Fp8 (Marlin)") for e in VLLM_ENGINES}
    if kind == "w4a8-fp8":
        w = group.get("weights") or {}
        shape_ok = w.get("strategy") == "group" and w.get("symmetric", True) and a.get("strategy") == "token" and a.get("dynamic") is True
        if not shape_ok or fmt != "pack-quantized":
            return {e: _no(e, "W4A8Fp8 needs pack-quantized symmetric group-wise int4 weights and dynamic per-token FP8 inputs") for e in VLLM_ENGINES}
        if w.get("group_size") != 128:
            return {e: _no(e, f"W4A8Fp8 kernels require group_size 128; this checkpoint has {w.get('group_size')}") for e in VLLM_ENGINES}
        return {VLLM_AMPERE: _no(VLLM_AMPERE, "W4A8Fp8 (CUTLASS) is selected on exactly SM90; Ampere has no FP8 tensor cores"),
                VLLM_HOPPER: _yes(VLLM_HOPPER, "W4A8Fp8 (CUTLASS, SM90)"),
                VLLM_BLACKWELL: _no(VLLM_BLACKWELL, "W4A8Fp8 is selected on exactly SM90, not on Blackwell")}
    if kind == "nvfp4-w4a4":
        fallback = "W4A4Fp4 needs Blackwell (cc 10.0); vLLM warns and runs the weights as FP4 weight-only, activations unquantized"
        return {VLLM_AMPERE: _yes(VLLM_AMPERE, "W4A16Fp4 (Marlin) fallback", fallback),
                VLLM_HOPPER: _yes(VLLM_HOPPER, "W4A16Fp4 (Marlin) fallback", fallback),
                VLLM_BLACKWELL: _yes(VLLM_BLACKWELL, "W4A4Fp4 (FlashInfer / CUTLASS)")}
    if kind == "nvfp4-a16":
        return {e: _yes(e, "W4A16Fp4 (Marlin)") for e in VLLM_ENGINES}
    if kind.startswith("mxfp4"):
        return {VLLM_AMPERE: _no(VLLM_AMPERE, "MXFP4 is served on Blackwell"),
                VLLM_HOPPER: _no(VLLM_HOPPER, "MXFP4 is served on Blackwell"),
                VLLM_BLACKWELL: _yes(VLLM_BLACKWELL, "MXFP4")}
    if kind == "w4a4-int":
        symmetric_dynamic = a.get("symmetric", False) and a.get("dynamic") is True and a.get("strategy") in ("token", "group")
        if fmt != "pack-quantized" or not symmetric_dynamic:
            why = ("int W4A4 is written int-quantized (one byte per code) with "
                   f"{'symmetric' if a.get('symmetric') else 'asymmetric'} inputs; vLLM's WNA4Int path reads pack-quantized int4 "
                   "weights with symmetric dynamic int4 inputs")
            return {e: _no(e, why) for e in VLLM_ENGINES}
        return {VLLM_AMPERE: _yes(VLLM_AMPERE, "WNA4Int (Humming, new)"),
                VLLM_HOPPER: _no(VLLM_HOPPER, "WNA4Int is disabled on H100 by an assert (vllm #49032)"),
                VLLM_BLACKWELL: _no(VLLM_BLACKWELL, "WNA4Int is an Ampere/Ada path")}
    if kind.endswith("a8-int8"):
        return {e: _no(e, "int4 weights with int8 activations (W4A8Int) is an Arm CPU path, not a GPU one") for e in VLLM_ENGINES}
    return {e: _no(e, f"no vLLM kernel for the scheme {kind}") for e in VLLM_ENGINES}


def _unique(items: list[str | None]) -> list[str]:
    return list(dict.fromkeys(i for i in items if i))


def engine_support(
    qcfg: dict[str, Any] | None, runtime_requirements: list[str], lm_head_quantized: bool = False,
) -> list[EngineSupport]:
    """One row per engine in `ENGINES` for a checkpoint's quantization config and runtime requirements.

    Every part of the checkpoint (each config group, the KV cache, each transform, each runtime
    requirement) contributes an answer per engine; an engine serves the checkpoint when every
    part is served, and its path joins the parts' paths.
    """
    found: dict[str, list[EngineSupport]] = {e: [] for e in ENGINES}
    qcfg = qcfg or {}
    fmt_global = qcfg.get("format")
    for group in qcfg.get("config_groups", {}).values():
        if group.get("weights"):
            for e, support in _vllm_for_scheme(scheme_kind(group), group, group.get("format") or fmt_global).items():
                found[e].append(support)
    if qcfg:
        found[TRANSFORMERS].append(_yes(TRANSFORMERS, "compressed-tensors decompression and fake quantization (dense compute, no speed-up)"))

    kv = qcfg.get("kv_cache_scheme")
    if kv:
        fp8_static = kv.get("type") == "float" and int(kv.get("num_bits", 0)) == 8 and not kv.get("dynamic", False)
        for e in VLLM_ENGINES:
            found[e].append(_yes(e, "fp8 KV cache (k_scale / v_scale)") if fp8_static else
                            _no(e, "an int KV cache is a vLLM serving flag (--kv-cache-dtype), not a checkpoint scheme it reads"))

    transforms = (qcfg.get("transform_config") or {}).get("config_groups", {})
    if transforms:
        found[TRANSFORMERS].append(_no(TRANSFORMERS, "transformers ignores transform_config: it would run the model without its online rotation"))
        hadamard = all(s.get("type") in ("hadamard", "random-hadamard") for s in transforms.values())
        for e in VLLM_ENGINES:
            found[e].append(_yes(e, "online input transform (dense GEMM)", "online transforms need tensor parallel 1") if hadamard else
                            _no(e, "vLLM normalizes every transform weight by 1/sqrt(n), which fits Hadamard transforms only"))

    requirement_reasons = {
        "qk_rotation_after_rope": "Q/K rotation after RoPE (R3) is not in the stock graph and vLLM does not implement it",
        "runtime_output_matrix": "a dense run-time matrix after a norm is not in the stock graph",
        "fatrelu_activation": "the FATReLU gate threshold is not in the stock graph",
        "online_input_kronecker": "learned Kronecker input transforms (online_rotations.safetensors) are not in the stock graph; "
                                  "compressor.load runs them",
    }
    for code in runtime_requirements:
        if code in requirement_reasons:
            for e in ENGINES:
                found[e].append(_no(e, requirement_reasons[code]))
    if lm_head_quantized:
        for e in VLLM_ENGINES:
            found[e].append(_no(e, "quantized lm_head: needs a vLLM whose compressed-tensors loader handles ParallelLMHead "
                                   "(vllm-project/vllm#37291); not verified"))

    rows = []
    for e in ENGINES:
        parts = found[e] or [_yes(e, "dense bf16")]
        refused = [p for p in parts if not p.serves]
        if refused:
            rows.append(_no(e, "; ".join(_unique([p.reason for p in refused]))))
        else:
            rows.append(EngineSupport(e, True, " + ".join(_unique([p.path for p in parts])),
                                      "; ".join(_unique([p.reason for p in parts])) or None))
    return rows


def engine_table(rows: list[EngineSupport]) -> dict[str, dict[str, Any]]:
    """The manifest's `engine_support`: engine → {serves, path, reason}."""
    return {r.engine: {k: v for k, v in asdict(r).items() if k != "engine"} for r in rows}


def engines_summary(rows: list[EngineSupport]) -> dict[str, bool]:
    """The manifest's short `engines`: transformers, and vllm = served on at least one GPU generation."""
    by = {r.engine: r.serves for r in rows}
    return {"transformers": by[TRANSFORMERS], "vllm": any(by[e] for e in VLLM_ENGINES)}


# each ready-made recipe's engine table, as its export gives it (`compressor/export/recipe_engines.py` writes it)
RECIPE_ENGINES_FILE = Path(__file__).resolve().parents[1] / "recipes" / "engines.json"


@cache
def recipe_engine_tables() -> dict[str, dict[str, dict[str, Any]]]:
    """recipe name -> engine -> {serves, path, reason}: what serves the checkpoint a ready-made recipe writes."""
    return json.loads(RECIPE_ENGINES_FILE.read_text()) if RECIPE_ENGINES_FILE.exists() else {}
