"""Export to the compressed-tensors checkpoint format (what vLLM and transformers load).

Int weights: weight-only int4 and int4 weights under FP8 activations (W4A8) go out as
`pack-quantized` (8 offset-binary nibbles per int32 along the input dimension, the library's
own `pack_to_int32`); 8-bit weights and int activations as `int-quantized` (one int8 per
value). Float weights are compressed by compressed-tensors' own compressors from the
dequantized weight and its scales: FP8 as `float-quantized`, NVFP4 as `nvfp4-pack-quantized`,
MXFP4 as `mxfp4-pack-quantized`; several formats in one model make it `mixed-precision` with a
format per group. Everything not quantized is stored in bfloat16; an lm_head equal to the input
embedding is stored once (tied). The online down_proj rotation is written as a
`transform_config` input transform (see `transform_config`); Q/K rotation after RoPE has no
place vLLM reads, so such artifacts say so. Who serves the result is decided by the rule table
in `engines`; the manifest's `runtime_requirements` name, as codes, what a runtime needs beyond
a stock graph.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compressor.export.format import (
    CONFIG_FILE,
    WEIGHT,
    WEIGHT_PACKED,
    WEIGHT_SCALE,
    WEIGHT_SHAPE,
    WEIGHT_ZERO_POINT,
    RuntimeRequirement,
    library_versions,
    module_name,
    write_manifest,
)
from compressor.execution.residency import ResidentLayers
from compressor.export.engines import engine_support, engine_table, engines_summary
from compressor.export.shard_writer import ShardWriter
from compressor.export.stored_precision import EXPORT_DTYPE
from compressor.models.adapter import adapter_for
from compressor.export.online_rotations import write_online_kronecker
from compressor.export.transform_config import online_transform_config
from compressor.quant.attention import KV_SCALES, QK_ROTATION, kv_cache_quant
from compressor.quant.compressed_linear import FakeQuantLinear
from compressor.quant.float_formats import FloatQuantizedWeight, kv_cache_args
from compressor.quant.quantizer import QuantizedWeight
from compressor.sparsity.activation import export_notes as activation_export_notes
from compressor.spec import ActivationQuantConfig, KVCacheQuantConfig
from compressor.transforms.fusion import runtime_transform_reasons



def _signed(codes: torch.Tensor, zero: torch.Tensor, q: QuantizedWeight) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes and zero points in the signed int range compressed-tensors stores."""
    if q.symmetric:
        return codes.to(torch.int8), torch.zeros_like(zero, dtype=torch.int8)
    offset = 2 ** (q.bits - 1)
    return (codes.to(torch.int16) - offset).to(torch.int8), (zero.round().to(torch.int16) - offset).to(torch.int8)


def _weight_args(q: QuantizedWeight, in_features: int) -> dict[str, Any]:
    strategy = "channel" if q.group_size >= in_features else "group"
    args: dict[str, Any] = {
        "num_bits": q.bits, "type": "int", "symmetric": q.symmetric, "strategy": strategy,
        "dynamic": False, "observer": "minmax",
    }
    if strategy == "group":
        args["group_size"] = q.group_size
    return args


def _activation_args(cfg: ActivationQuantConfig | KVCacheQuantConfig, strategy: str) -> dict[str, Any]:
    return {"num_bits": cfg.bits, "type": "int", "symmetric": cfg.symmetric, "strategy": strategy, "dynamic": True, "observer": None}


FLOAT_FORMATS = {"fp8": "float-quantized", "nvfp4": "nvfp4-pack-quantized", "mxfp4": "mxfp4-pack-quantized"}


def _input_args(module: FakeQuantLinear) -> dict[str, Any] | None:
    if module.input_quant is None:
        return None
    if module.input_args is not None:  # float: compressed-tensors' own args
        return module.input_args.model_dump()
    return _activation_args(module.input_quant, "token")


def _kv_cache_scheme(kv_cache: KVCacheQuantConfig | None, head_dim: int) -> dict[str, Any] | None:
    """fp8: static per tensor (k_scale, v_scale). int: one dynamic range per token and head, which compressed-tensors
    spells as dynamic `group` quantization with a group of `head_dim` (its key/value states are [batch, heads, tokens, head_dim])."""
    if kv_cache is None:
        return None
    if kv_cache.format == "fp8":
        return kv_cache_args(kv_cache).model_dump()
    return {**_activation_args(kv_cache, "group"), "group_size": head_dim}


def _int_format(modules: list[FakeQuantLinear]) -> str:
    """pack-quantized when every int linear is 4-bit or narrower with no or FP8 inputs (W4A16, W4A8-FP8), else int-quantized."""
    packable = all(m.quantized_weight.bits <= 4 and (m.input_quant is None or m.input_quant.format == "fp8") for m in modules)
    return "pack-quantized" if packable else "int-quantized"


def _float_tensors(name: str, module: FakeQuantLinear, scheme: dict[str, Any], fmt: str) -> dict[str, torch.Tensor]:
    """compressed-tensors' compressor for `fmt` applied to the dequantized weight and its scales."""
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.quantization import QuantizationScheme

    q: FloatQuantizedWeight = module.quantized_weight
    state = {"weight": q.weight, "weight_scale": q.scale}
    if q.global_scale is not None:
        state["weight_global_scale"] = q.global_scale
    if module.input_scale is not None:
        state["input_scale"] = module.input_scale
    if module.input_global_scale is not None:
        state["input_global_scale"] = module.input_global_scale
    if module.input_quant is not None and module.input_quant.static and module.input_scale is None and module.input_global_scale is None:
        raise ValueError(f"{name}: static {module.input_quant.format} input quantization was never calibrated")
    compressed = BaseCompressor.get_value_from_registry(fmt).compress(state, QuantizationScheme(targets=[name], **scheme))
    return {f"{name}.{key}": value.detach().contiguous() for key, value in compressed.items()}


def _static_input_tensors(name: str, module: FakeQuantLinear) -> dict[str, torch.Tensor]:
    """Calibrated input scales of a linear whose weights are int (W4A8 with static FP8 inputs)."""
    out = {}
    if module.input_scale is not None:
        out[f"{name}.input_scale"] = module.input_scale.detach().float().reshape(1)
    if module.input_global_scale is not None:
        out[f"{name}.input_global_scale"] = module.input_global_scale.detach().float().reshape(1)
    return out


def export_compressed_tensors(model: nn.Module, tokenizer: Any, out_dir: Path, manifest_info: dict[str, Any],
                              layers: ResidentLayers | None = None) -> list[Path]:
    """Write config.json, the weights (model.safetensors, or shards with an index), the tokenizer and manifest.json.

    Every scheme is read from the model's modules (weights and activations from the wrapped
    linears, the KV cache from the attention modules), so the checkpoint describes the model
    as it is, not as some recipe stage once asked. The tensors are produced a group at a time
    (`layers.state_groups()`: the whole model when it is resident, one decoder layer at a
    time when it is not) and streamed into shards.
    """
    layers = layers or ResidentLayers(model, adapter_for(model))
    kv_cache = kv_cache_quant(model)
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(out_dir)
    schemes: dict[str, dict[str, Any]] = {}
    online_rotations: dict[str, torch.Tensor] = {}
    online_kronecker: dict[str, tuple[torch.Tensor, ...]] = {}

    quantized = {n: m for n, m in model.named_modules() if isinstance(m, FakeQuantLinear) and m.quantized_weight is not None}
    int_modules = [m for m in quantized.values() if isinstance(m.quantized_weight, QuantizedWeight)]
    int_fmt = _int_format(int_modules) if int_modules else None
    format_of: dict[str, str] = {}
    scheme_of: dict[str, dict[str, Any]] = {}  # linear -> its weights / input_activations args
    for name, module in model.named_modules():
        if not isinstance(module, FakeQuantLinear):
            continue
        q = module.quantized_weight
        if q is None:
            continue
        if isinstance(q, FloatQuantizedWeight):
            scheme = {"weights": q.args.model_dump()}
            format_of[name] = FLOAT_FORMATS[q.format]
        else:
            scheme = {"weights": _weight_args(q, module.in_features)}
            format_of[name] = int_fmt
        input_args = _input_args(module)
        if input_args is not None:
            scheme["input_activations"] = input_args
        scheme_of[name] = dict(scheme)
        scheme["format"] = format_of[name]
        key = json.dumps(scheme, sort_keys=True)
        schemes.setdefault(key, {**scheme, "targets": []})["targets"].append(name)

    formats = sorted(set(format_of.values()))
    fmt = formats[0] if len(formats) == 1 else "mixed-precision"
    compressed_names = {n for n, m in model.named_modules() if isinstance(m, FakeQuantLinear)}
    tied = layers.embeddings_tied(EXPORT_DTYPE)  # as the checkpoint stores both: the same bytes are written once
    head_key = f"{module_name(model, model.get_output_embeddings())}.weight" if tied else None
    for prefix, group in layers.state_groups(outer_dtype=EXPORT_DTYPE):
        root = model.get_submodule(prefix.rstrip(".")) if prefix else model
        for name, module in root.named_modules(prefix=prefix.rstrip(".")):  # the group's online rotations, while in memory
            if not isinstance(module, FakeQuantLinear):
                continue
            left = module.input_kron_left
            if left is not None and left.device.type != "meta":  # written as factors, in the project's own file
                online_kronecker[name] = (module.input_smooth, left, module.input_kron_right)
            elif module.input_rotation is not None and module.input_rotation.device.type != "meta":
                _collect_rotation(online_rotations, name, module.input_rotation)
        state: dict[str, torch.Tensor] = {}
        for name, tensor in group.items():
            if name == head_key:
                continue
            parent = name.rsplit(".linear.", 1)[0] if ".linear." in name else None
            if parent in compressed_names:
                module = model.get_submodule(parent)
                if name.endswith(".weight") and parent in quantized:
                    q = module.quantized_weight
                    if isinstance(q, FloatQuantizedWeight):
                        state.update(_float_tensors(parent, module, scheme_of[parent], format_of[parent]))
                    else:
                        state.update(_quantized_tensors(parent, q, format_of[parent]))
                        state.update(_static_input_tensors(parent, module))
                    continue
                name = f"{parent}.{name.rsplit('.', 1)[1]}"
            state[name] = tensor.detach().to(EXPORT_DTYPE).contiguous()
        writer.add(state)
    state = {}
    if kv_cache is not None and kv_cache.format == "fp8":
        for name, module in model.named_modules():
            scales = getattr(module, KV_SCALES, None)
            if scales is not None:
                state[f"{name}.k_scale"] = scales["k"].detach().float().reshape(1).contiguous()
                state[f"{name}.v_scale"] = scales["v"].detach().float().reshape(1).contiguous()
    transform_cfg, transform_tensors = online_transform_config(online_rotations)
    state.update(transform_tensors)
    writer.add(state)
    writer.close()

    config = model.config.to_dict()
    for key in [k for k in config if k.startswith("_")]:
        config.pop(key)
    config["dtype"] = "bfloat16"
    config["tie_word_embeddings"] = tied
    qcfg = None
    if schemes or transform_cfg or kv_cache is not None:
        groups = {}
        for i, s in enumerate(schemes.values()):  # each group names its format, as compressed-tensors' infer_model_format sets it
            groups[f"group_{i}"] = dict(s)
        qcfg = {
            "quant_method": "compressed-tensors",
            "format": fmt if schemes else "dense",
            "quantization_status": "compressed",
            "config_groups": groups,
            "ignore": ["lm_head"],
            "kv_cache_scheme": _kv_cache_scheme(kv_cache, _head_dim(model)),
        }
        if transform_cfg:
            qcfg["transform_config"] = transform_cfg
        _check_with_compressed_tensors(qcfg)
        config["quantization_config"] = qcfg
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tokenizer.save_pretrained(out_dir)

    int_activation_bits = {m.input_quant.bits for m in quantized.values() if m.input_quant is not None and m.input_quant.format == "int"}
    not_servable, requirements = [], []
    if any(getattr(m, QK_ROTATION, None) is not None for m in model.modules()):
        not_servable.append("Q/K rotation after RoPE is not in the stock graph")
        requirements.append(RuntimeRequirement.QK_ROTATION_AFTER_ROPE.value)
    if int_activation_bits and min(int_activation_bits) < 8:
        requirements.append(RuntimeRequirement.ACTIVATIONS_BELOW_8_BITS.value)
    if online_rotations:
        requirements.append(RuntimeRequirement.ONLINE_INPUT_ROTATION.value)
    kronecker_entries = write_online_kronecker(out_dir, online_kronecker)
    if kronecker_entries:
        requirements.append(RuntimeRequirement.ONLINE_INPUT_KRONECKER.value)
    runtime = runtime_transform_reasons(model)  # e.g. AffineQuant's dense norm matrices
    if runtime:
        not_servable.extend(runtime)
        requirements.append(RuntimeRequirement.RUNTIME_OUTPUT_MATRIX.value)
    activation_reasons, activation_requirements = activation_export_notes(model)  # ProSparse FATReLU gate
    not_servable.extend(activation_reasons)
    requirements.extend(activation_requirements)
    support = engine_support(qcfg, requirements)
    not_servable.extend(r.reason for r in support if not r.serves and r.reason and r.reason not in not_servable
                        and all(not s.serves for s in support))
    info = {
        **manifest_info,
        "format": f"compressed-tensors/{qcfg['format']}" if qcfg else "dense-bf16",
        "versions": library_versions(),
        "engines": engines_summary(support),
        "engine_support": engine_table(support),
        "not_servable_reasons": not_servable,
        "runtime_requirements": requirements,
        **({"online_transforms": kronecker_entries} if kronecker_entries else {}),
    }
    write_manifest(out_dir, info)
    return sorted(p for p in out_dir.iterdir() if p.is_file())


def _collect_rotation(rotations: dict[str, torch.Tensor], name: str, matrix: torch.Tensor) -> None:
    """Keep `name`'s online rotation, one CPU copy per distinct matrix (every layer's R4 is the same)."""
    for known in dict.fromkeys(rotations.values()):
        if known.shape == matrix.shape and torch.equal(known, matrix.detach().cpu()):
            rotations[name] = known
            return
    rotations[name] = matrix.detach().cpu().clone()


def _head_dim(model: nn.Module) -> int:
    cfg = model.config
    return int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)


def _check_with_compressed_tensors(qcfg: dict[str, Any]) -> None:
    """Parse the config with compressed-tensors' own models, so a config it would not read is never written."""
    from compressed_tensors.quantization import QuantizationConfig
    from compressed_tensors.transform import TransformConfig

    QuantizationConfig.model_validate({k: v for k, v in qcfg.items() if k not in ("quant_method", "transform_config")})
    if qcfg.get("transform_config"):
        TransformConfig.model_validate(qcfg["transform_config"])


def _quantized_tensors(name: str, q: QuantizedWeight, fmt: str) -> dict[str, torch.Tensor]:
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

    codes, zero = _signed(q.codes, q.zero, q)
    out = {f"{name}.{WEIGHT_SCALE}": q.scale.to(EXPORT_DTYPE).contiguous()}
    if fmt == "pack-quantized":
        out[f"{name}.{WEIGHT_PACKED}"] = pack_to_int32(codes, q.bits).contiguous()
        out[f"{name}.{WEIGHT_SHAPE}"] = torch.tensor(list(q.codes.shape), dtype=torch.int64)
        if not q.symmetric:
            out[f"{name}.{WEIGHT_ZERO_POINT}"] = pack_to_int32(zero, q.bits, packed_dim=0).contiguous()
    else:
        out[f"{name}.{WEIGHT}"] = codes.contiguous()
        if not q.symmetric:
            out[f"{name}.{WEIGHT_ZERO_POINT}"] = zero.contiguous()
    return out


def quantized_bits_per_weight(model: nn.Module) -> float | None:
    """Average stored bits per decoder-linear weight, counting bf16 scales and zero points."""
    bits = numel = 0
    for module in model.modules():
        if isinstance(module, FakeQuantLinear) and isinstance(module.quantized_weight, FloatQuantizedWeight):
            bits += module.quantized_weight.stored_bits()
            numel += module.quantized_weight.weight.numel()
        elif isinstance(module, FakeQuantLinear) and module.quantized_weight is not None:
            q = module.quantized_weight
            n = q.codes.numel()
            bits += n * q.bits + q.scale.numel() * 16 + (0 if q.symmetric else q.zero.numel() * q.bits)
            numel += n
    return bits / numel if numel else None
