"""The `quantize` recipe stage: weights by RTN or GPTQ, then activations and the KV cache."""

from __future__ import annotations

from typing import Any

import torch

from compressor.context import CompressionContext
from compressor.quant.attention import KV_QUANT, set_kv_quant, use_compressed_attention
from compressor.quant.calibration import capture_layer0_inputs, capture_linear_inputs, layer_outputs
from compressor.quant.compressed_linear import install_quantized_weight, plain_linear, wrap_linear
from compressor.quant.gptq import HessianAccumulator, gptq_quantize
from compressor.quant.quantizer import quantize_weight_rtn
from compressor.quant.static_scales import calibrate_static_scales
from compressor.registry import register_stage
from compressor.spec import QuantizeConfig, WeightQuantConfig


def quantize_weights_rtn(ctx: CompressionContext, cfg: WeightQuantConfig) -> None:
    layers = ctx.adapter.all_layer_parts(ctx.model)
    for parts in layers:
        for name, lin in parts.linears().items():
            ctx.layer_errors.append(install_quantized_weight(parts, name, quantize_weight_rtn(plain_linear(lin).weight.data, cfg)))
        ctx.progress.layer(parts.index, len(layers))


@torch.no_grad()
def quantize_weights_gptq(ctx: CompressionContext, cfg: WeightQuantConfig) -> None:
    """Sequential GPTQ: each layer's Hessians come from the outputs of the already-quantized layers before it."""
    inputs = capture_layer0_inputs(ctx.model, ctx.adapter, ctx.calibration_tokens())
    layers = ctx.adapter.all_layer_parts(ctx.model)
    for parts in layers:
        linears = {name: plain_linear(lin) for name, lin in parts.linears().items()}
        source = {name: parts.shared_inputs().get(name, name) for name in linears}  # q/k/v and gate/up share one
        hessians = {name: HessianAccumulator(linears[name].in_features) for name in set(source.values())}
        watched = {name: linears[name] for name in hessians}
        with capture_linear_inputs(watched, lambda name, x: hessians[name].add(x)):
            layer_outputs(parts.layer, inputs)
        for name, lin in linears.items():
            ctx.layer_errors.append(install_quantized_weight(parts, name, gptq_quantize(lin.weight.data, hessians[source[name]].hessian, cfg)))
        del hessians
        inputs.hidden = layer_outputs(parts.layer, inputs)
        ctx.progress.layer(parts.index, len(layers))


def clear_dynamic_quantizers(ctx: CompressionContext) -> None:
    """Switch off activation and KV quantizers set by earlier stages (e.g. for transform training).

    Weights are calibrated on unquantized activations, as in QuaRot; this stage then installs
    its own activation/KV quantizers, so the recipe's quantize stage alone decides them.
    """
    for module in ctx.model.modules():
        if getattr(module, "input_quant", None) is not None:
            module.input_quant = None
        if getattr(module, KV_QUANT, None) is not None:
            set_kv_quant(module, None)


@register_stage(QuantizeConfig)
def run_quantize(ctx: CompressionContext, cfg: QuantizeConfig) -> dict[str, Any]:
    clear_dynamic_quantizers(ctx)
    if cfg.weights is not None:
        (quantize_weights_gptq if cfg.weights.method == "gptq" else quantize_weights_rtn)(ctx, cfg.weights)
    if cfg.activations is not None:
        for parts in ctx.adapter.all_layer_parts(ctx.model):
            for name in parts.linears():
                parent_name, attr = name.split(".")
                wrap_linear(getattr(parts.layer, parent_name), attr).input_quant = cfg.activations
    if cfg.kv_cache is not None:
        for parts in ctx.adapter.all_layer_parts(ctx.model):
            set_kv_quant(parts.layer.self_attn, cfg.kv_cache)
        use_compressed_attention(ctx.model)
    static = calibrate_static_scales(ctx)  # fp8 per-tensor inputs, nvfp4 input global scales, fp8 k/v scales
    return {"weights": cfg.weights.method if cfg.weights else None,
            "activations_bits": cfg.activations.bits if cfg.activations else None,
            "kv_cache_bits": cfg.kv_cache.bits if cfg.kv_cache else None,
            **({"static_scales": static} if static else {})}
