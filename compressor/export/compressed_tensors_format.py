"""Export to the compressed-tensors checkpoint format (what vLLM and transformers load).

Weight-only int4 goes out as `pack-quantized` (8 offset-binary nibbles per int32 along the
input dimension, the library's own `pack_to_int32`); 8-bit weights and anything with
quantized activations as `int-quantized` (one int8 per value). Everything not quantized is
stored in bfloat16; an lm_head equal to the input embedding is stored once (tied). Online
rotations (the down_proj Hadamard, Q/K after RoPE) are not part of a stock Llama graph, so such
artifacts are flagged as not servable by plain engines; the down_proj rotation is still written
(`online_rotations.safetensors`, see `online_rotations`) so that `compressor.load` can run it.
The manifest's `runtime_requirements` name, as codes, what a runtime needs beyond a stock graph.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from compressor.export.format import (
    CONFIG_FILE,
    WEIGHT,
    WEIGHT_PACKED,
    WEIGHT_SCALE,
    WEIGHT_SHAPE,
    WEIGHT_ZERO_POINT,
    WEIGHTS_FILE,
    RuntimeRequirement,
    library_versions,
    module_name,
    write_manifest,
)
from compressor.export.online_rotations import write_online_rotations
from compressor.quant.attention import QK_ROTATION, kv_cache_quant
from compressor.quant.compressed_linear import FakeQuantLinear
from compressor.quant.quantizer import QuantizedWeight
from compressor.sparsity.activation import export_notes as activation_export_notes
from compressor.spec import ActivationQuantConfig, KVCacheQuantConfig
from compressor.transforms.fusion import runtime_transform_reasons

EXPORT_DTYPE = torch.bfloat16


def _embeddings_tied(model: nn.Module) -> bool:
    """Whether lm_head holds exactly the input embedding (the store unties them on load; RTN/GPTQ leave them equal)."""
    try:
        head, emb = model.get_output_embeddings(), model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        return False
    if head is None or emb is None or getattr(head, "bias", None) is not None:
        return False
    return head.weight.shape == emb.weight.shape and bool(torch.equal(head.weight, emb.weight))


def group_size_problems(model: nn.Module, group_size: int, linear_names: list[str]) -> list[str]:
    """Linears whose input width `group_size` does not divide, with the divisors that would."""
    problems = []
    for name in linear_names:
        cols = model.get_submodule(name).in_features
        if cols % group_size:
            divisors = [g for g in (16, 32, 64, 128, 256) if cols % g == 0]
            problems.append(f"{name} (in_features {cols}; group sizes that divide it: {divisors})")
    return problems


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


def export_compressed_tensors(model: nn.Module, tokenizer: Any, out_dir: Path, manifest_info: dict[str, Any]) -> list[Path]:
    """Write config.json, model.safetensors, the tokenizer and manifest.json into `out_dir`.

    Every scheme is read from the model's modules (weights and activations from the wrapped
    linears, the KV cache from the attention modules), so the checkpoint describes the model
    as it is, not as some recipe stage once asked.
    """
    kv_cache = kv_cache_quant(model)
    out_dir.mkdir(parents=True, exist_ok=True)
    state: dict[str, torch.Tensor] = {}
    schemes: dict[str, dict[str, Any]] = {}
    weight_only_int4 = True
    online_rotations: dict[str, torch.Tensor] = {}

    compressed_names = {n for n, m in model.named_modules() if isinstance(m, FakeQuantLinear)}
    for name, module in model.named_modules():
        if not isinstance(module, FakeQuantLinear):
            continue
        if module.input_rotation is not None:
            online_rotations[name] = module.input_rotation
        q = module.quantized_weight
        if q is None:
            continue
        scheme = {"weights": _weight_args(q, module.in_features)}
        if module.input_quant is not None:
            scheme["input_activations"] = _activation_args(module.input_quant, "token")
        key = json.dumps(scheme, sort_keys=True)
        schemes.setdefault(key, {**scheme, "targets": []})["targets"].append(name)
        weight_only_int4 &= module.input_quant is None and q.bits <= 4

    fmt = "pack-quantized" if schemes and weight_only_int4 else "int-quantized"
    tied = _embeddings_tied(model)
    head_key = f"{module_name(model, model.get_output_embeddings())}.weight" if tied else None
    for name, tensor in model.state_dict().items():
        if name == head_key:
            continue
        parent = name.rsplit(".linear.", 1)[0] if ".linear." in name else None
        if parent in compressed_names:
            module = model.get_submodule(parent)
            if name.endswith(".weight") and module.quantized_weight is not None:
                state.update(_quantized_tensors(parent, module.quantized_weight, fmt))
                continue
            name = f"{parent}.{name.rsplit('.', 1)[1]}"
        state[name] = tensor.detach().to(EXPORT_DTYPE).contiguous()
    save_file(dict(sorted(state.items())), str(out_dir / WEIGHTS_FILE), metadata={"format": "pt"})
    online_transforms = write_online_rotations(online_rotations, out_dir)

    config = model.config.to_dict()
    for key in [k for k in config if k.startswith("_")]:
        config.pop(key)
    config["dtype"] = "bfloat16"
    config["tie_word_embeddings"] = tied
    if schemes:
        config["quantization_config"] = {
            "quant_method": "compressed-tensors",
            "format": fmt,
            "quantization_status": "compressed",
            "config_groups": {f"group_{i}": s for i, s in enumerate(schemes.values())},
            "ignore": ["lm_head"],
            "kv_cache_scheme": _activation_args(kv_cache, "attn_head") if kv_cache else None,
        }
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tokenizer.save_pretrained(out_dir)

    activation_bits = {s.get("input_activations", {}).get("num_bits") for s in schemes.values()} - {None}
    not_servable, requirements = [], []
    if online_rotations:
        not_servable.append(f"online Hadamard rotations on {len(online_rotations)} linears are not in the stock graph")
        requirements.append(RuntimeRequirement.ONLINE_INPUT_ROTATION.value)
    if any(getattr(m, QK_ROTATION, None) is not None for m in model.modules()):
        not_servable.append("Q/K rotation after RoPE is not in the stock graph")
        requirements.append(RuntimeRequirement.QK_ROTATION_AFTER_ROPE.value)
    if activation_bits and min(activation_bits) < 8:
        not_servable.append("int activations below 8 bits have no serving kernels (research artifact)")
        requirements.append(RuntimeRequirement.ACTIVATIONS_BELOW_8_BITS.value)
    runtime = runtime_transform_reasons(model)  # e.g. AffineQuant's dense norm matrices
    if runtime:
        not_servable.extend(runtime)
        requirements.append(RuntimeRequirement.RUNTIME_OUTPUT_MATRIX.value)
    activation_reasons, activation_requirements = activation_export_notes(model)  # ProSparse FATReLU gate
    not_servable.extend(activation_reasons)
    requirements.extend(activation_requirements)
    info = {
        **manifest_info,
        "format": f"compressed-tensors/{fmt}" if schemes else "dense-bf16",
        "versions": library_versions(),
        "engines": {"transformers": not not_servable, "vllm": not not_servable},
        "not_servable_reasons": not_servable,
        "runtime_requirements": requirements,
        "online_transforms": online_transforms,
    }
    write_manifest(out_dir, info)
    return sorted(p for p in out_dir.iterdir() if p.is_file())


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
        if isinstance(module, FakeQuantLinear) and module.quantized_weight is not None:
            q = module.quantized_weight
            n = q.codes.numel()
            bits += n * q.bits + q.scale.numel() * 16 + (0 if q.symmetric else q.zero.numel() * q.bits)
            numel += n
    return bits / numel if numel else None
