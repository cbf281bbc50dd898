"""Whether a job keeps its whole model on the device or walks it one decoder layer at a time.

Sequential execution holds one decoder layer (plus the calibration activations) instead of
the model, so it is what lets a model bigger than the device compress. It covers the stages
that work layer by layer and leave the embedding and head as stored: RTN and GPTQ weights,
dynamic activation and KV-cache quantizers, export and evaluation. Transform stages that
rewrite the embedding and head (Hadamard, OSTQuant), block-wise AffineQuant, ProSparse's
training and static scales calibrated through the whole model run resident; a recipe that
asks for sequential with one of them is refused with the stage named.
"""

from __future__ import annotations

from typing import Literal

from compressor.spec import Recipe
from compressor.spec.order import sequential_stage_problems

Layers = Literal["resident", "sequential"]
RESIDENT_SHARE = 0.6  # auto: resident while the weights take at most this share of the device's free memory


def sequential_blockers(recipe: Recipe, layout_changes: bool = False) -> list[str]:
    """Why this recipe cannot run one layer at a time on this model (empty: it can)."""
    problems = sequential_stage_problems(recipe.stage_configs())
    if layout_changes:
        problems.append("the model family splits fused projections while a job runs (Phi-3); it runs resident")
    return problems


def choose_layers(recipe: Recipe, weight_bytes: int, available_bytes: int, layout_changes: bool = False) -> tuple[Layers, str]:
    """(resident | sequential, why): the recipe's `execution.layers`, or for `auto` what fits."""
    asked = recipe.execution.layers
    blockers = sequential_blockers(recipe, layout_changes)
    if asked == "sequential":
        if blockers:
            raise ValueError("execution.layers: sequential is not possible for this recipe:\n  " + "\n  ".join(blockers))
        return "sequential", "asked by the recipe"
    if asked == "resident":
        return "resident", "asked by the recipe"
    gib = 2**30
    if weight_bytes <= RESIDENT_SHARE * available_bytes:
        return "resident", f"the weights ({weight_bytes / gib:.1f} GiB) fit the device ({available_bytes / gib:.1f} GiB free)"
    if blockers:
        return "resident", (f"the weights ({weight_bytes / gib:.1f} GiB) exceed {RESIDENT_SHARE:.0%} of the device's free "
                            f"{available_bytes / gib:.1f} GiB, but: " + "; ".join(blockers))
    return "sequential", f"the weights ({weight_bytes / gib:.1f} GiB) exceed {RESIDENT_SHARE:.0%} of the device's free {available_bytes / gib:.1f} GiB"
