"""What a stage handler works on: the model being compressed and the job's shared state."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compressor.checkpoints import CheckpointStore
from compressor.data import calibration_chunks, load_text
from compressor.execution.residency import ResidentLayers
from compressor.models.adapter import LlamaFamilyAdapter
from compressor.progress import Progress
from compressor.spec import QuantizeConfig, Recipe


@dataclass
class CompressionContext:
    model: nn.Module
    tokenizer: Any
    adapter: LlamaFamilyAdapter
    recipe: Recipe
    progress: Progress
    data_dir: Path
    layer_errors: list[dict[str, Any]] = field(default_factory=list)
    report_sections: dict[str, Any] = field(default_factory=dict)  # extra report.json sections (qsur, ...)
    stage_index: int = 0  # index of the stage now running
    checkpoints: CheckpointStore = field(default_factory=lambda: CheckpointStore(None))  # resume state (none: off)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # where the job's stages run
    dtype: torch.dtype = torch.float32  # working dtype of the weights (delicate math keeps its own precision)
    layers: ResidentLayers | None = None  # where the decoder layers live between uses (None: all resident)

    def __post_init__(self) -> None:
        if self.layers is None:
            self.layers = ResidentLayers(self.model, self.adapter)
    _calibration: torch.Tensor | None = None

    def calibration_tokens(self) -> torch.Tensor:
        """[samples, seqlen] calibration token ids, built once per job."""
        if self._calibration is None:
            cal = self.recipe.calibration
            text = load_text(cal.dataset, "calibration", self.data_dir)
            self._calibration = calibration_chunks(self.tokenizer, text, cal.samples, cal.seqlen).to(self.device)
        return self._calibration

    def unit_key(self, kind: str, number: int) -> str:
        """The checkpoint key of unit `number` (a layer, a step) of the running stage: `s1:layer:00017`."""
        return f"s{self.stage_index}:{kind}:{number:05d}"

    def next_quantize_config(self) -> QuantizeConfig | None:
        """The first quantize stage after the running one: what a transform stage should prepare for."""
        later = self.recipe.stage_configs()[self.stage_index + 1 :]
        return next((c for c in later if isinstance(c, QuantizeConfig)), None)
