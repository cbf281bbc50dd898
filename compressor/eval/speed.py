"""What compression bought in speed: the exported checkpoint reloaded with `compressor.load`, checked and timed.

The fake-quant model the job evaluated and the checkpoint a serving stack loads are two
different programs (float matmuls on dequantized weights against packed int4/int8 codes run
by Triton on CUDA or torch's native low-bit ops on the CPU). Reloading the checkpoint and
scoring it on the same evaluation windows with the same `score_windows` catches a checkpoint
that does not say what the job measured; timing it against the original on the same device
says what the bytes saved buy. Both are in the report's `speed` section.

The reload check's default tolerance, 0.5% relative perplexity: the two programs legitimately
differ only by rounding (the CPU int4 op takes bf16 activations where the fake-quant model
computes in fp32; fused q/k/v and gate/up matmuls sum in another order; on CUDA the Triton
kernels accumulate in their own tile order). Over the hundreds of tokens of even a small slice
that rounding averages out to ~0.1% or less, while a loader that gets a scale, a zero point,
a packing order or a rotation wrong moves perplexity by whole percents or more. The same
0.5% is what the float formats' compressed-tensors reload is held to
(tests/compressor/export/test_float_formats.py).
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compressor.data import eval_windows, load_text
from compressor.eval.perplexity import score_windows
from compressor.eval.report import LinearBackend, ReloadCheck, SpeedSection, Throughput
from compressor.export.format import UnsupportedArtifactError
from compressor.inference.loader import load
from compressor.inference.modules import DequantizedLinear
from compressor.inference.sizes import weight_bytes
from compressor.spec import SpeedConfig
from triton_kernels.quant_linear import QuantLinear

# What each (linear kind, backend `QuantLinear.resolve_backend` picks) runs: the kernels named in triton_kernels.quant_linear.
KERNELS: dict[tuple[str, str], str] = {
    ("int4", "triton"): "Triton W4A16 (triton_kernels.w4a16.w4a16_matmul)",
    ("int4", "native"): "torch _weight_int4pack_mm_for_cpu",
    ("int4", "reference"): "plain torch: dequantize + matmul (w4a16_reference)",
    ("int8_w8a8", "triton"): "Triton W8A8 (triton_kernels.w8a8.w8a8_linear)",
    ("int8_w8a8", "native"): "torch._int_mm (int8 x int8, per-token activation scales)",
    ("int8_w8a8", "reference"): "plain torch: w8a8_reference",
    ("int8_w8a16", "native"): "torch _weight_int8pack_mm",
    ("int8_w8a16", "reference"): "plain torch: dequantize + matmul (no Triton W8A16 kernel)",
}
DENSE_KERNEL = "F.linear on the dequantized weight (inputs fake-quantized as exported)"


@dataclass
class SpeedJob:
    """What one measurement needs: the two folders, the slice the job scored and the model that scored it."""

    checkpoint_dir: Path
    original_dir: Path
    dataset: str | None  # None: the job evaluated nothing
    windows: torch.Tensor  # [n, window] token ids: the first n windows the job's evaluation scored
    fake_quant: nn.Module  # the in-memory model the job evaluated (fake-quantized)
    device: torch.device
    dtype: torch.dtype  # the job's working dtype: both timed models compute in it
    skipped_reason: str | None = None  # why this job is not measured (it ran one layer at a time)


def speed_job(ctx: Any, checkpoint_dir: Path, original_dir: Path, cfg: SpeedConfig) -> SpeedJob:
    """The `SpeedJob` of a running job: the first `cfg.windows` windows of its first eval dataset, `ctx.model`, its device."""
    ecfg = ctx.recipe.eval
    dataset = ecfg.datasets[0] if ecfg.datasets else None
    windows = (eval_windows(ctx.tokenizer, load_text(dataset, "eval", ctx.data_dir), ecfg.max_tokens, ecfg.window)
               if dataset else torch.empty(0, ecfg.window, dtype=torch.long))
    skipped = None
    if ctx.layers.sequential:
        skipped = ("the job ran one decoder layer at a time (execution.layers: sequential): the reloaded checkpoint, the "
                   "original and the job's model would not fit in memory together")
    return SpeedJob(checkpoint_dir=Path(checkpoint_dir), original_dir=Path(original_dir), dataset=dataset,
                    windows=windows[: cfg.windows], fake_quant=ctx.model, device=torch.device(ctx.device), dtype=ctx.dtype,
                    skipped_reason=skipped)


def measure_speed(job: SpeedJob, cfg: SpeedConfig) -> SpeedSection:
    """Reload, check perplexity against the fake-quant model, time prefill and decode against the original.

    A checkpoint `compressor.load` refuses (a format or transform it cannot run faithfully)
    gives a section that says why instead of raising: the job's checkpoint and scores stand.
    """
    start = time.perf_counter()
    base = dict(device=str(job.device), dtype=str(job.dtype).removeprefix("torch."), threads=torch.get_num_threads())
    if job.skipped_reason is not None:
        return SpeedSection(**base, skipped_reason=job.skipped_reason)
    if job.dataset is None or job.windows.shape[0] == 0:
        return SpeedSection(**base, skipped_reason="no evaluation windows to check the reloaded checkpoint on (eval.datasets is empty)")
    try:
        compressed = load(job.checkpoint_dir, dtype=job.dtype, device=job.device)
    except UnsupportedArtifactError as e:
        return SpeedSection(**base, skipped_reason=f"compressor.load cannot run this checkpoint: {e}",
                            seconds=round(time.perf_counter() - start, 3))
    reload = reload_check(job, compressed, cfg.tolerance)
    original = load_original(job.original_dir, job.dtype, job.device)
    prompts = prompt_tokens(job.windows, max(cfg.batch_sizes), cfg.prompt_tokens, original.config.vocab_size)
    throughput = []
    for batch in cfg.batch_sizes:
        throughput += time_models(original, compressed, prompts[:batch].to(job.device), cfg.decode_tokens, cfg.rounds)
    section = SpeedSection(
        **base, reload=reload, throughput=throughput, backends=linear_backends(compressed, job.device, job.dtype),
        weight_bytes={"original": weight_bytes(original)["total"], "compressed": weight_bytes(compressed)["total"]},
        rounds=cfg.rounds, seconds=round(time.perf_counter() - start, 3),
    )
    del original, compressed
    if job.device.type == "cuda":
        torch.cuda.empty_cache()
    return section


def reload_check(job: SpeedJob, compressed: nn.Module, tolerance: float) -> ReloadCheck:
    """Perplexity of the reloaded checkpoint and of the fake-quant model on the same windows, same scoring."""
    windows = job.windows.to(job.device)
    fake = score_windows(job.fake_quant, windows)
    reloaded = score_windows(compressed, windows)
    diff = abs(reloaded.perplexity / fake.perplexity - 1)
    return ReloadCheck(dataset=job.dataset, windows=int(windows.shape[0]), tokens=fake.tokens,
                       fake_quant_perplexity=fake.perplexity, reloaded_perplexity=reloaded.perplexity,
                       relative_difference=diff, tolerance=tolerance, passed=diff <= tolerance)


def load_original(folder: Path, dtype: torch.dtype, device: torch.device) -> nn.Module:
    """The model the job started from, as transformers loads it, in the working dtype on the device."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, trust_remote_code=False).to(device).eval()


def prompt_tokens(windows: torch.Tensor, batch: int, length: int, vocab_size: int) -> torch.Tensor:
    """[batch, length] prompts cut from the evaluation text (repeated if the slice is shorter): real text, not noise."""
    flat = windows.flatten()
    if flat.numel() == 0:
        flat = torch.arange(vocab_size)
    need = batch * length
    flat = flat.repeat(-(-need // flat.numel()))[:need]
    return flat.reshape(batch, length).clone()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def generation_seconds(model: nn.Module, prompts: torch.Tensor, decode_tokens: int) -> tuple[float, float]:
    """(prefill seconds, decode seconds): one forward over the prompts filling a KV cache, then
    `decode_tokens` greedy one-token steps; only the last position's logits in the prefill, as a server computes."""
    from transformers import DynamicCache

    device = prompts.device
    cache = DynamicCache(config=model.config)
    _sync(device)
    t0 = time.perf_counter()
    out = model(prompts, cache=cache, use_cache=True, logits_to_keep=1)
    token = out.logits[:, -1].argmax(-1, keepdim=True)
    _sync(device)
    t1 = time.perf_counter()
    for _ in range(decode_tokens):
        out = model(token, cache=cache, use_cache=True)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
    _sync(device)
    return t1 - t0, time.perf_counter() - t1


def warm_up(model: nn.Module, prompts: torch.Tensor) -> None:
    """One untimed prefill at the timed shape and two decode steps: the first call at a shape pays for
    allocations and kernel selection (oneDNN primitives on the CPU, Triton compilation and autotuning on CUDA),
    and took twice a timed prefill here; the later decode steps all have the shape of the second."""
    generation_seconds(model, prompts, 2)


def time_models(original: nn.Module, compressed: nn.Module, prompts: torch.Tensor, decode_tokens: int,
                rounds: int) -> list[Throughput]:
    """Prefill and decode tokens/s of both models at one batch size: a warm-up run each, then `rounds`
    interleaved rounds (a slow spell of a shared machine hits both alike), medians."""
    models = {"original": original, "compressed": compressed}
    for model in models.values():
        warm_up(model, prompts)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            times[name].append(generation_seconds(model, prompts, decode_tokens))
    batch, length = prompts.shape
    rows = []
    for phase, index, tokens in (("prefill", 0, length), ("decode", 1, decode_tokens)):
        rate = {name: batch * tokens / statistics.median(t[index] for t in times[name]) for name in models}
        rows.append(Throughput(phase=phase, batch=batch, tokens_per_sequence=tokens,
                               original_tokens_per_s=rate["original"], compressed_tokens_per_s=rate["compressed"],
                               speedup=rate["compressed"] / rate["original"]))
    return rows


def linear_kind(module: QuantLinear) -> str:
    """The artifact's name for a QuantLinear's kind (as `compressor.inference.build` counts them)."""
    if module.bits == 4:
        return "int4"
    return "int8_w8a8" if module.quantize_activations else "int8_w8a16"


def linear_backends(model: nn.Module, device: torch.device, dtype: torch.dtype) -> list[LinearBackend]:
    """Per kind of low-bit linear, the backend its forward takes on `device` (QuantLinear's own dispatch), with counts.

    Fused q/k/v and gate/up projections count once per fused matmul.
    """
    counts: Counter = Counter()
    for module in model.modules():
        if isinstance(module, QuantLinear):
            probe = torch.zeros(1, module.in_features, dtype=dtype, device=device)
            kind = linear_kind(module)
            counts[(kind, module.resolve_backend(probe))] += 1
        elif isinstance(module, DequantizedLinear):
            counts[("dense", "dense")] += 1
    return [LinearBackend(kind=kind, backend=backend, modules=n,
                          kernel=DENSE_KERNEL if kind == "dense" else KERNELS.get((kind, backend), backend))
            for (kind, backend), n in sorted(counts.items())]
