"""`load(folder)`: an exported artifact as a transformers model with low-bit linears for inference.

The folder is what the exporter writes (config.json, model.safetensors, manifest.json, the
tokenizer, optionally online_rotations.safetensors). Every quantized linear becomes a
`triton_kernels.quant_linear.QuantLinear` built straight from the stored integer codes, scales
and zero points: packed int4 words are used as they are, other codes are only re-laid out,
never dequantized and requantized. QuantLinear then runs Triton on CUDA and torch's native
int4/int8 ops on CPU.

What QuantLinear has no kernel for (group-wise 8-bit, asymmetric or sub-8-bit activations) runs
exactly but slowly as a dense layer (`DequantizedLinear`); `model.artifact.dense_fallbacks` lists
those layers. Online down_proj rotations stored by the exporter run in front of their linear
(`InputRotation`), and stored run-time output matrices (AffineQuant's dense norm transforms)
after their module, as in the pipeline. An artifact needing anything else outside a stock Llama
graph (Q/K rotation after RoPE) is refused rather than run wrongly. A quantized KV cache (fp8 with
its stored k/v scales, or int per token and head) runs in the attention backend the pipeline uses.
Float formats (FP8, NVFP4, MXFP4, W4A8-FP8) have no CPU kernel: compressed-tensors' compressor
decompresses them into dense layers that fake-quantize their inputs as exported.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compressor.models.shards import open_shards
from compressor.export.format import (
    RuntimeRequirement,
    UnsupportedArtifactError,
    check_requirements,
    module_name,
    read_manifest,
    verify_files,
)
from compressor.export.online_rotations import read_online_kronecker, read_online_rotations
from compressor.export.transform_config import read_online_transforms, transform_weight_keys
from compressor.inference.build import build_float_linear, build_quantized_linear, linear_schemes, quantized_state
from compressor.inference.fused_projections import fuse_projections
from compressor.inference.modules import InputKronecker, InputRotation
from compressor.inference.quantized_embedding import HeadTiedEmbedding, head_matches_table
from compressor.quant.attention import KV_SCALES, set_kv_quant, use_compressed_attention
from compressor.sparsity.activation import apply_activation_from_config
from compressor.spec import KVCacheQuantConfig
from compressor.transforms.fusion import RUNTIME_OUTPUT_MATRIX, RUNTIME_TRANSFORM_ATTR, attach_runtime_output_matrix
from triton_kernels.quant_linear import Backend, QuantLinear

# Projections that read the same input, fused into one int4 matmul when compatible.
FUSABLE_GROUPS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))
SUPPORTED_REQUIREMENTS = {
    RuntimeRequirement.ONLINE_INPUT_ROTATION, RuntimeRequirement.ONLINE_INPUT_KRONECKER, RuntimeRequirement.ACTIVATIONS_BELOW_8_BITS,
    RuntimeRequirement.RUNTIME_OUTPUT_MATRIX, RuntimeRequirement.FATRELU_ACTIVATION,
}


@dataclass
class ArtifactInfo:
    """What `load` found and built; attached to the model as `model.artifact`."""

    path: Path
    manifest: dict[str, Any]
    format: str | None
    layers: Counter = field(default_factory=Counter)  # kind of module built -> count
    dense_fallbacks: list[str] = field(default_factory=list)
    online_rotations: list[str] = field(default_factory=list)
    fused_groups: int = 0
    cpu_layout_only: int = 0  # int4 layers holding only the CPU op's layout
    embedding_from_head: bool = False  # embed_tokens reads its rows from the quantized lm_head
    runtime_output_matrices: list[str] = field(default_factory=list)
    kv_cache: str | None = None  # format of the quantized KV cache run by the attention backend


def _restore_meta_buffers(model: nn.Module) -> None:
    """Non-persistent buffers (RoPE inverse frequencies) are computed at construction: rebuild them off meta."""
    for name, module in list(model.named_modules()):
        if any(b is not None and b.is_meta for b in module.buffers(recurse=False)):
            if hasattr(module, "scalar_embed_scale"):  # Gemma's embeddings scaled by sqrt(hidden): a non-persistent scalar
                module.embed_scale = torch.tensor(module.scalar_embed_scale)
                continue
            if not any(n.endswith("inv_freq") for n, _ in module.named_buffers(recurse=False)):  # Gemma 3: <layer type>_inv_freq
                raise RuntimeError(f"{name}: buffers left on the meta device")
            parent_name, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, attr, type(module)(config=model.config))


def kv_cache_config(scheme: dict[str, Any] | None) -> KVCacheQuantConfig | None:
    """The KV quantizer a `kv_cache_scheme` describes: fp8 with static k/v scales, or int per token and head."""
    if not scheme:
        return None
    if scheme.get("type") == "float" and int(scheme.get("num_bits", 0)) == 8 and not scheme.get("dynamic"):
        return KVCacheQuantConfig(format="fp8", bits=8, symmetric=True)
    if scheme.get("type") == "int" and scheme.get("dynamic") and scheme.get("strategy") in ("group", "attn_head"):
        return KVCacheQuantConfig(format="int", bits=int(scheme["num_bits"]), symmetric=bool(scheme.get("symmetric", False)))
    raise UnsupportedArtifactError(f"kv_cache_scheme {scheme} is not one compressor.load runs (fp8 static, or int per token and head)")


def attach_kv_cache_quantization(model: nn.Module, cfg: KVCacheQuantConfig, scales: dict[str, torch.Tensor]) -> None:
    """Quantize keys and values in every attention module as the pipeline did, with the stored fp8 scales."""
    layers = [m for m in model.modules() if hasattr(m, "k_proj") and hasattr(m, "v_proj")]
    for name, attention in ((module_name(model, m), m) for m in layers):
        set_kv_quant(attention, cfg)
        if cfg.format == "fp8":
            try:
                setattr(attention, KV_SCALES, {"k": scales[f"{name}.k_scale"].float().reshape(1),
                                               "v": scales[f"{name}.v_scale"].float().reshape(1)})
            except KeyError as e:
                raise UnsupportedArtifactError(f"{name}: fp8 KV cache without its stored {e.args[0]}") from e
    use_compressed_attention(model)


def load(
    folder: str | Path,
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
    backend: Backend = "auto",
    verify_checksums: bool = True,
    fuse: bool = True,
    compact: bool | None = None,
) -> nn.Module:
    """An exported artifact as a transformers causal LM with QuantLinear layers, in eval mode.

    `dtype` is the compute dtype and that of every non-quantized tensor (stored in bf16, so
    bf16 keeps them as they are; float32 is exact too). QuantLinear keeps the stored scales in
    `dtype`. With `fuse`, q/k/v and gate/up int4 projections become one matmul each (exact).
    With `compact` (default: on a CPU device with the auto/native backend) int4 layers keep only
    the CPU op's layout (`QuantLinear.drop_pack_quantized`). An embedding stored as the
    dequantized int8 or int4 lm_head (`compressor.export.head_quant`) is read from the head's codes.
    Raises `UnsupportedArtifactError` for artifacts it cannot run faithfully.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = Path(folder)
    manifest = read_manifest(folder)
    check_requirements(manifest, SUPPORTED_REQUIREMENTS, "compressor.load")
    verify_files(folder, manifest, checksums=verify_checksums)
    config = AutoConfig.from_pretrained(folder)
    qcfg = getattr(config, "quantization_config", None)
    qcfg = qcfg.to_dict() if hasattr(qcfg, "to_dict") else qcfg
    kv_cache = None
    if qcfg is not None:
        del config.quantization_config
        if qcfg.get("quant_method") != "compressed-tensors":
            raise UnsupportedArtifactError(f"quant_method {qcfg.get('quant_method')!r} is not compressed-tensors")
        kv_cache = kv_cache_config(qcfg.get("kv_cache_scheme"))
        if qcfg.get("quantization_status", "compressed") != "compressed":
            raise UnsupportedArtifactError(f"quantization_status {qcfg.get('quantization_status')!r}: expected 'compressed'")

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    info = ArtifactInfo(path=folder, manifest=manifest, format=qcfg.get("format") if qcfg else None)
    rotations = read_online_rotations(folder, manifest.get("online_transforms", []))  # artifacts written before transform_config
    kronecker = read_online_kronecker(folder, manifest.get("online_transforms", []))  # learned Kronecker input transforms
    transform_cfg = (qcfg or {}).get("transform_config")
    transform_keys = transform_weight_keys(transform_cfg)

    with open_shards(folder) as tensors:  # model.safetensors, or the shards a big model is exported in
        try:
            rotations.update(read_online_transforms(transform_cfg, tensors))
        except ValueError as e:
            raise UnsupportedArtifactError(str(e)) from e
        schemes = linear_schemes(model, qcfg) if qcfg else {}
        dense = {key: tensors.get_tensor(key).to(dtype) for key in tensors.keys()
                 if key.rpartition(".")[0] not in schemes and key not in transform_keys}
        for name, (args, input_args) in schemes.items():
            linear = model.get_submodule(name)
            if linear.bias is not None:
                linear.bias = nn.Parameter(tensors.get_tensor(f"{name}.bias").to(dtype), requires_grad=False)
            if args.get("type") == "float" or (input_args or {}).get("type") == "float":
                module, kind = build_float_linear(tensors, name, linear, args, input_args, qcfg, dtype)
            else:
                state = quantized_state(tensors, name, args, (linear.out_features, linear.in_features))
                module, kind = build_quantized_linear(name, linear, state, args, input_args, dtype, backend)
            info.layers[kind] += 1
            if kind.startswith("dense"):
                info.dense_fallbacks.append(name)
            if name in rotations:
                module = InputRotation(rotations[name].to(torch.float32), module)
                info.online_rotations.append(name)
            elif name in kronecker:
                module = InputKronecker(*kronecker[name], module)
                info.online_rotations.append(name)
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent), attr, module)
    embedding_key = f"{module_name(model, model.get_input_embeddings())}.weight"
    head = model.get_output_embeddings()
    if embedding_key in dense and head_matches_table(head, dense[embedding_key]):  # see export.head_quant
        padding_idx = getattr(model.get_input_embeddings(), "padding_idx", None)
        model.set_input_embeddings(HeadTiedEmbedding(head, dtype, padding_idx))
        del dense[embedding_key]
        info.embedding_from_head = True
    kv_scales = {key: dense.pop(key) for key in list(dense) if key.rpartition(".")[2] in ("k_scale", "v_scale")}
    runtime_matrices = {key.rpartition(".")[0]: dense.pop(key) for key in list(dense)
                        if key.rpartition(".")[2] == RUNTIME_OUTPUT_MATRIX}
    missing_rotations = (set(rotations) | set(kronecker)) - set(info.online_rotations)
    if missing_rotations:
        raise UnsupportedArtifactError(f"online rotations for non-quantized linears are not supported: {sorted(missing_rotations)[:3]}")

    tied = bool(getattr(config, "tie_word_embeddings", False))
    result = model.load_state_dict(dense, strict=False, assign=True)
    built = tuple(f"{name}." for name in schemes)  # QuantLinear buffers, filled above
    missing = [k for k in result.missing_keys if not (k.startswith(built) or (tied and k == "lm_head.weight")
                                                       or (info.embedding_from_head and k == embedding_key))]
    if missing or result.unexpected_keys:
        raise UnsupportedArtifactError(f"weights do not match the model: missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}")
    if tied:
        model.get_output_embeddings().weight = model.get_input_embeddings().weight
    for name, matrix in runtime_matrices.items():
        module = model.get_submodule(name)
        if getattr(module, RUNTIME_TRANSFORM_ATTR, None) is None:
            attach_runtime_output_matrix(module, matrix, "run-time output matrix stored in the artifact")
        info.runtime_output_matrices.append(name)
    _restore_meta_buffers(model)
    if qcfg is not None and kv_cache is not None:
        attach_kv_cache_quantization(model, kv_cache, kv_scales)
        info.kv_cache = kv_cache.format
    apply_activation_from_config(model)  # ProSparse: FATReLU threshold from config.json
    leftover = [n for n, p in list(model.named_parameters()) + list(model.named_buffers()) if p.is_meta]
    if leftover:
        raise RuntimeError(f"tensors left on the meta device: {leftover[:5]}")
    for p in model.parameters():
        p.requires_grad_(False)
    if fuse:
        for module in list(model.modules()):
            for names in FUSABLE_GROUPS:
                if all(hasattr(module, n) for n in names) and fuse_projections(module, list(names)):
                    info.fused_groups += 1
    if compact is None:
        compact = torch.device(device).type == "cpu" and backend in ("auto", "native")
    if compact:
        info.cpu_layout_only = sum(m.drop_pack_quantized() for m in model.modules() if isinstance(m, QuantLinear) and m.bits == 4)
    model.artifact = info
    return model.to(device).eval()


def load_tokenizer(folder: str | Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(Path(folder))
