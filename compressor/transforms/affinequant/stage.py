"""The `affinequant` recipe stage: calibrate, train block by block, leave a fake-quantized model behind.

Afterwards every decoder linear is a `FakeQuantLinear` whose weight is the dequantized integer
codes (`quantized_weight`, what export packs), with `input_quant` set when activations are
quantized — the same state the `quantize` stage leaves, so export and evaluation need nothing new.
"""

from __future__ import annotations

from typing import Any

from compressor.context import CompressionContext
from compressor.registry import register_stage
from compressor.spec import AffineQuantConfig
from compressor.transforms.affinequant.reconstruction import affinequant_quantize


@register_stage(AffineQuantConfig)
def run_affinequant(ctx: CompressionContext, cfg: AffineQuantConfig) -> dict[str, Any]:
    log = affinequant_quantize(ctx.model, ctx.adapter, ctx.calibration_tokens(), cfg, ctx.progress,
                               ctx.checkpoints, lambda i: ctx.unit_key("layer", i), ctx.layers)
    ctx.layer_errors.extend(log.pop("weight_errors"))
    return {
        "mask": cfg.mask, "ln_matrix": cfg.ln_matrix, "qk_matrix": cfg.qk_matrix, "loss": cfg.loss, "epochs": cfg.epochs,
        "weights_bits": cfg.weights.bits, "activations_bits": cfg.activations.bits if cfg.activations else None,
        **log,
    }
