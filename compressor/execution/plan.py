"""A job's execution plan: its device and dtype, its memory estimate, and the refusal of what cannot fit.

`pipeline.run` makes the plan before any weight loads, so an end-to-end method (OSTQuant,
ProSparse training: the whole model on the device with grads and optimizer state) that
needs more memory than the device has fails at once, with the numbers and what to change.
Layer-local methods are not refused here: the worker's `COMPRESSOR_WORKER_MEMORY` check at
submit time covers them, and the lead's sequential mode runs them on a smaller device.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from compressor.execution.device import ExecutionTarget, device_memory, execution_target, peak_device_mb, reset_device_peak
from compressor.execution.layer_policy import sequential_blockers
from compressor.execution.memory import MemoryEstimate, estimate_peak, format_bytes

END_TO_END_STAGES = ("ostquant", "prosparse")


class InsufficientMemoryError(ValueError):
    """The job's estimated peak exceeds what the device has; the message has the numbers and what to change."""


@dataclass(frozen=True)
class ExecutionPlan:
    target: ExecutionTarget
    estimate: MemoryEstimate
    layers: str = "resident"

    def for_layers(self, model_config: dict[str, Any], recipe: Any, layers: str) -> ExecutionPlan:
        """The plan once the residency is chosen (`compressor.execution.layer_policy`): its estimate for that mode."""
        return replace(self, layers=layers, estimate=estimate_peak(model_config, recipe, self.target.kind, layers))


def end_to_end_stages(recipe: Any) -> list[str]:
    return [type(c).stage for c in recipe.stage_configs() if getattr(type(c), "stage", "") in END_TO_END_STAGES]


def what_to_change(recipe: Any, estimate: MemoryEstimate) -> str:
    """The recipe fields that shrink the largest parts of the estimate."""
    hints = []

    def has(*prefixes: str) -> bool:
        return any(k.startswith(prefixes) for k in estimate.parts)

    if has("ostquant", "prosparse"):
        hints.append("fewer calibration.seqlen tokens or a smaller batch_size of the training stage")
    if any(getattr(c, "activation_checkpointing", True) is False for c in recipe.stage_configs()):
        hints.append("activation_checkpointing: true on the training stage")
    if has("calibration_activations", "layer_forward"):
        hints.append(f"fewer calibration.samples (now {recipe.calibration.samples})")
    if has("eval_logits"):
        hints.append(f"a smaller eval.window (now {recipe.eval.window}) or eval.kl: false")
    if estimate.layers == "resident" and not sequential_blockers(recipe):
        hints.append("execution.layers: sequential")
    hints.append("a worker with more memory")
    return "; ".join(hints)


def plan_execution(model_config: dict[str, Any], recipe: Any, device: str | None = None) -> ExecutionPlan:
    """The job's target (argument, else `COMPRESSOR_DEVICE`) and estimate; refuses an end-to-end job that cannot fit."""
    target = execution_target(recipe, device)
    estimate = estimate_peak(model_config, recipe, target.kind, "resident")
    plan = ExecutionPlan(target=target, estimate=estimate)
    reset_device_peak(target.device)
    stages = end_to_end_stages(recipe)
    if stages:
        available, total = device_memory(target.device)
        if estimate.total_bytes > available:
            raise InsufficientMemoryError(
                f"{', '.join(stages)} keeps the whole model on {target.device} and needs about "
                f"{estimate.describe()}; {format_bytes(available)} is available there (of {format_bytes(total)}). "
                f"To fit: {what_to_change(recipe, estimate)}")
    return plan


def execution_section(plan: ExecutionPlan, measured_peak_mb: float) -> Any:
    """The report's `execution` section: where it ran, the estimate beside the measured peaks."""
    from compressor.eval.report import ExecutionSection

    return ExecutionSection(device=plan.target.device, dtype=plan.target.dtype, layers=plan.layers,
                            estimate_peak_mb=round(plan.estimate.total_mb, 1), measured_peak_mb=round(measured_peak_mb, 1),
                            peak_device_mb=peak_device_mb(plan.target.device))
