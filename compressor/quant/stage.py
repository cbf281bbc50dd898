"""The `quantize` recipe stage: weights by RTN or GPTQ, then activations and the KV cache."""

from __future__ import annotations

import time
from typing import Any

import torch

from compressor.checkpoints.records import record_from_unit, record_to_unit
from compressor.context import CompressionContext
from compressor.models.adapter import DecoderLayerParts
from compressor.quant.attention import KV_QUANT, set_kv_quant, use_compressed_attention
from compressor.execution.host_memory import release_freed_memory
from compressor.execution.layer_inputs import capture_layer0_inputs, layer_outputs
from compressor.quant.calibration import capture_linear_inputs
from compressor.quant.compressed_linear import install_quantized_weight, plain_linear, wrap_linear
from compressor.quant.gptq import HessianAccumulator, gptq_quantize
from compressor.quant.quantizer import QuantizedWeight, quantize_weight_rtn
from compressor.quant.static_scales import calibrate_static_scales
from compressor.registry import register_stage
from compressor.spec import QuantizeConfig, WeightQuantConfig


def _saved_layer(ctx: CompressionContext, parts: DecoderLayerParts) -> dict[str, QuantizedWeight] | None:
    """The quantized weights of layer `parts` a previous attempt of this job finished, if any."""
    unit = ctx.checkpoints.load(ctx.unit_key("layer", parts.index))
    if unit is None:
        return None
    return {name: record_from_unit(name, unit.tensors, unit.meta[name]) for name in parts.linears()}


def _finish_layer(ctx: CompressionContext, parts: DecoderLayerParts, weights: dict[str, QuantizedWeight],
                  started: float | None) -> None:
    """Install the layer's quantized weights; a freshly computed layer is checkpointed first."""
    if started is not None:
        tensors, meta = {}, {}
        for name, q in weights.items():
            t, meta[name] = record_to_unit(name, q)
            tensors.update(t)
        ctx.checkpoints.save(ctx.unit_key("layer", parts.index), tensors, meta, seconds=time.perf_counter() - started)
    for name, q in weights.items():
        ctx.layer_errors.append(install_quantized_weight(parts, name, q))


def quantize_weights_rtn(ctx: CompressionContext, cfg: WeightQuantConfig) -> None:
    total = ctx.adapter.num_layers
    for parts in ctx.layers.walk():
        saved, started = _saved_layer(ctx, parts), time.perf_counter()
        weights = saved or {name: quantize_weight_rtn(plain_linear(lin).weight.data, cfg) for name, lin in parts.linears().items()}
        _finish_layer(ctx, parts, weights, None if saved else started)
        ctx.progress.layer(parts.index, total)


@torch.no_grad()
def quantize_weights_gptq(ctx: CompressionContext, cfg: WeightQuantConfig) -> None:
    """Sequential GPTQ: each layer's Hessians come from the outputs of the already-quantized layers before it.

    On resume, layers a previous attempt finished are installed from its checkpoint. The
    calibration activations between layers are checkpointed too (at most every
    `step_interval_s`, newest only), so a resume starts from the newest of them and runs
    forward only through the finished layers after it; the bits are the same either way.
    """
    total = ctx.adapter.num_layers
    remaining = [i for i in range(total) if not ctx.checkpoints.has(ctx.unit_key("layer", i))]
    inputs = None
    if remaining:
        with ctx.layers.outer("embed"):
            inputs = capture_layer0_inputs(ctx.model, ctx.adapter, ctx.calibration_tokens(), spill_dir=ctx.layers.spill_dir)
    series = ctx.unit_key("inputs", 0)[:-5]
    start_at = 0  # the layer whose inputs `inputs.hidden` holds
    carried = ctx.checkpoints.latest(series) if remaining else None
    if inputs is not None and carried is not None and carried[1].meta["layer"] <= remaining[0]:
        inputs.hidden, start_at = carried[1].tensors["hidden"], carried[1].meta["layer"]
    for parts in ctx.layers.walk():
        saved, started = _saved_layer(ctx, parts), time.perf_counter()
        if saved is None:
            assert inputs is not None
            linears = {name: plain_linear(lin) for name, lin in parts.linears().items()}
            source = {name: parts.shared_inputs().get(name, name) for name in linears}  # q/k/v and gate/up share one
            hessians = {name: HessianAccumulator(linears[name].in_features, ctx.device) for name in set(source.values())}
            watched = {name: linears[name] for name in hessians}
            with capture_linear_inputs(watched, lambda name, x: hessians[name].add(x)):
                layer_outputs(parts.layer, inputs)
            last_reader = {source[name]: name for name in linears}  # a Hessian's last reader takes it (in place)
            weights = {}
            for name, lin in linears.items():
                release_freed_memory()  # the accumulation's and the previous linear's freed heap, before the next peak
                weights[name] = gptq_quantize(lin.weight.data, hessians.pop(source[name]) if last_reader[source[name]] == name
                                              else hessians[source[name]].hessian, cfg)
        _finish_layer(ctx, parts, saved or weights, None if saved else started)
        if inputs is not None and parts.index >= start_at and any(i > parts.index for i in remaining):
            inputs.hidden = layer_outputs(parts.layer, inputs)
            if saved is None and ctx.checkpoints.step_due(series, last=False):
                ctx.checkpoints.save(ctx.unit_key("inputs", parts.index + 1), {"hidden": inputs.hidden},
                                     {"layer": parts.index + 1}, replaces=series)
        ctx.progress.layer(parts.index, total)


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
