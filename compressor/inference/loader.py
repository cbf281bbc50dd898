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
graph (Q/K rotation after RoPE, a quantized KV cache) is refused rather than run wrongly.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from compressor.export.manifest import MANIFEST, sha256_file
from compressor.export.online_rotations import read_online_rotations
from compressor.inference.fused_projections import FusedProjection, fuse_projections
from compressor.inference.quantized_embedding import HeadTiedEmbedding, head_matches_table
from compressor.quant.quantizer import fake_quantize_per_token
from compressor.sparsity.activation import apply_activation_from_config
from compressor.transforms.fusion import RUNTIME_TRANSFORM_ATTR, attach_runtime_output_matrix
from triton_kernels import w4a16
from triton_kernels.packing import pack_int4, packed_width, unpack_int4
from triton_kernels.quant_linear import Backend, QuantLinear

WEIGHTS_FILE = "model.safetensors"
# Projections that read the same input, fused into one int4 matmul when compatible.
FUSABLE_GROUPS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))
# runtime_requirements codes (see compressor.export.compressed_tensors_format) that load() can meet.
SUPPORTED_REQUIREMENTS = {"online_input_rotation", "activations_below_8_bits", "runtime_output_matrix", "fatrelu_activation"}
RUNTIME_OUTPUT_MATRIX = "runtime_output_matrix"  # buffer name of fusion.attach_runtime_output_matrix


class UnsupportedArtifactError(ValueError):
    """The artifact needs something `load` cannot run faithfully."""


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


# --------------------------------------------------------------------------- modules


class InputRotation(nn.Module):
    """`inner(x @ R)`: the online rotation the exporter stored for this linear (R shared between layers)."""

    def __init__(self, rotation: torch.Tensor, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.register_buffer("rotation", rotation, persistent=False)

    @property
    def in_features(self) -> int:
        return self.rotation.shape[0]

    @property
    def out_features(self) -> int:
        return self.inner.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner((x.to(self.rotation.dtype) @ self.rotation).to(x.dtype))


class DequantizedLinear(nn.Module):
    """Exact but dense: the dequantized weight, with dynamic per-token fake quantization of the input if any."""

    def __init__(self, weight: torch.Tensor, input_bits: int | None = None, input_symmetric: bool = True):
        super().__init__()
        self.register_buffer("weight", weight)
        self.input_bits, self.input_symmetric = input_bits, input_symmetric
        self.out_features, self.in_features = weight.shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_bits is not None:
            x = fake_quantize_per_token(x, self.input_bits, self.input_symmetric)
        return nn.functional.linear(x, self.weight.to(x.dtype))

    def extra_repr(self) -> str:
        act = f", act=int{self.input_bits}" if self.input_bits else ""
        return f"in_features={self.in_features}, out_features={self.out_features}{act}"


# --------------------------------------------------------------------------- reading stored tensors


def _quantized_state(tensors: Any, name: str, fmt: str, args: dict[str, Any], shape: tuple[int, int]) -> dict[str, Any]:
    """Signed integer codes (int8 [N, K]) or packed int4 words, scales [N, groups] and zero points [N, groups]."""
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32

    n, k = shape
    bits = int(args["num_bits"])
    keys = set(tensors.keys())

    def get(key: str) -> torch.Tensor | None:
        full = f"{name}.{key}"
        return tensors.get_tensor(full) if full in keys else None

    scale = get("weight_scale")
    if scale is None:
        raise UnsupportedArtifactError(f"{name}: no weight_scale in {WEIGHTS_FILE}")
    scale = scale.reshape(n, -1)
    zero = get("weight_zero_point")
    packed = get("weight_packed")
    if packed is not None:  # pack-quantized: codes packed along K, zero points along N
        stored_shape = get("weight_shape")
        if stored_shape is not None and tuple(int(v) for v in stored_shape.tolist()) != (n, k):
            raise UnsupportedArtifactError(f"{name}: weight_shape {stored_shape.tolist()} != model shape {(n, k)}")
        if zero is not None:
            zero = unpack_from_int32(zero, bits, torch.Size((n, scale.shape[1])), packed_dim=0).to(torch.int8)
        if bits == 4 and packed.dtype == torch.int32 and packed.shape == (n, packed_width(k)):
            return {"packed_int4": packed, "codes": None, "scale": scale, "zero": zero, "bits": bits}
        codes = unpack_from_int32(packed, bits, torch.Size((n, k))).to(torch.int8)
    else:  # int-quantized: one signed code per value
        codes = get("weight")
        if codes is None:
            raise UnsupportedArtifactError(f"{name}: neither weight_packed nor weight in {WEIGHTS_FILE}")
        codes = codes.to(torch.int8)
        if zero is not None:
            zero = zero.reshape(n, -1).to(torch.int8)
    return {"packed_int4": None, "codes": codes, "scale": scale, "zero": zero, "bits": bits}


def _group_size(args: dict[str, Any], k: int, groups: int) -> int:
    if args.get("strategy") == "group":
        return int(args["group_size"])
    if groups != 1:
        raise UnsupportedArtifactError(f"strategy {args.get('strategy')!r} with {groups} scales per row")
    return k


def _dequantize(state: dict[str, Any], group: int, k: int) -> torch.Tensor:
    codes = state["codes"] if state["codes"] is not None else unpack_int4(state["packed_int4"], k)
    scale = state["scale"].to(torch.float32).repeat_interleave(group, dim=1)[:, :k]
    q = codes.to(torch.float32)
    if state["zero"] is not None:
        q = q - state["zero"].to(torch.float32).repeat_interleave(group, dim=1)[:, :k]
    return q * scale


def build_quantized_linear(
    name: str, linear: nn.Linear, state: dict[str, Any], args: dict[str, Any], input_args: dict[str, Any] | None,
    dtype: torch.dtype, backend: Backend,
) -> tuple[nn.Module, str]:
    """The fastest exact module for one stored linear, and a short name of its kind."""
    n, k = linear.out_features, linear.in_features
    scale, zero, bits = state["scale"], state["zero"], state["bits"]
    group = _group_size(args, k, scale.shape[1])
    bias = None if linear.bias is None else linear.bias
    act_bits = None if input_args is None else int(input_args["num_bits"])
    act_sym = True if input_args is None else bool(input_args.get("symmetric", True))
    if input_args is not None and (input_args.get("strategy") != "token" or not input_args.get("dynamic", False)):
        raise UnsupportedArtifactError(f"{name}: only dynamic per-token activation quantization is supported, got {input_args}")

    int4_group_ok = group == k or (group % w4a16.MIN_GROUP_SIZE == 0 and k % group == 0)
    if input_args is None and bits <= 4 and int4_group_ok:
        packed = state["packed_int4"]
        if packed is None:  # 2/3-bit codes, or int4 stored one per byte: exact re-layout, no requantization
            packed = pack_int4(state["codes"])
        module = QuantLinear(k, n, 4, packed, scale.to(dtype), zero, None if group == k else group, bias, backend=backend)
        return module, "int4"
    if zero is None and group == k and bits <= 8 and (act_bits is None or (act_bits == 8 and act_sym)):
        codes = state["codes"] if state["codes"] is not None else unpack_int4(state["packed_int4"], k)
        module = QuantLinear(k, n, 8, codes.contiguous(), scale.reshape(n).to(dtype), bias=bias,
                             quantize_activations=act_bits is not None, backend=backend)
        return module, "int8_w8a8" if act_bits else "int8_w8a16"
    weight = _dequantize(state, group, k).to(dtype)
    module = DequantizedLinear(weight, act_bits, act_sym)
    if bias is not None:
        raise UnsupportedArtifactError(f"{name}: a biased linear without a QuantLinear path")
    return module, "dense_fallback"


# --------------------------------------------------------------------------- load


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.is_file():
        raise UnsupportedArtifactError(f"{folder} has no {MANIFEST}: not an artifact folder written by compressor")
    return json.loads(path.read_text())


def verify_files(folder: Path, manifest: dict[str, Any], checksums: bool = True) -> None:
    """Every file the manifest lists exists with its size (and sha256)."""
    for entry in manifest.get("files", []):
        path = folder / entry["name"]
        if not path.is_file():
            raise UnsupportedArtifactError(f"{path} is listed in the manifest but missing")
        if path.stat().st_size != entry["size"]:
            raise UnsupportedArtifactError(f"{path}: size {path.stat().st_size} != manifest {entry['size']}")
        if checksums and sha256_file(path) != entry["sha256"]:
            raise UnsupportedArtifactError(f"{path}: sha256 differs from the manifest")


def _check_requirements(manifest: dict[str, Any]) -> None:
    if "runtime_requirements" in manifest:
        unmet = [r for r in manifest["runtime_requirements"] if r not in SUPPORTED_REQUIREMENTS]
    else:  # manifests written before the codes existed: trust only the reasons we can read
        unmet = [r for r in manifest.get("not_servable_reasons", []) if not r.startswith("int activations below 8 bits")]
    if unmet:
        reasons = "; ".join(manifest.get("not_servable_reasons", [])) or ", ".join(unmet)
        raise UnsupportedArtifactError(f"compressor.load cannot run this artifact: it needs {', '.join(unmet)} ({reasons})")


def _linear_schemes(model: nn.Module, qcfg: dict[str, Any]) -> dict[str, tuple[dict, dict | None, str]]:
    """Linear name -> (weight args, input activation args, format) from the config groups."""
    from compressed_tensors.utils import is_match

    ignore = qcfg.get("ignore") or []
    out = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        for group in qcfg.get("config_groups", {}).values():
            if group.get("weights") and is_match(name, module, group.get("targets", []), ignore):
                out[name] = (group["weights"], group.get("input_activations"), group.get("format") or qcfg.get("format"))
                break
    return out


def _restore_meta_buffers(model: nn.Module) -> None:
    """Non-persistent buffers (RoPE inverse frequencies) are computed at construction: rebuild them off meta."""
    for name, module in list(model.named_modules()):
        if any(b is not None and b.is_meta for b in module.buffers(recurse=False)):
            if not hasattr(module, "inv_freq"):
                raise RuntimeError(f"{name}: buffers left on the meta device")
            parent_name, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, attr, type(module)(config=model.config))


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
    _check_requirements(manifest)
    verify_files(folder, manifest, checksums=verify_checksums)
    config = AutoConfig.from_pretrained(folder)
    qcfg = getattr(config, "quantization_config", None)
    qcfg = qcfg.to_dict() if hasattr(qcfg, "to_dict") else qcfg
    if qcfg is not None:
        del config.quantization_config
        if qcfg.get("quant_method") != "compressed-tensors":
            raise UnsupportedArtifactError(f"quant_method {qcfg.get('quant_method')!r} is not compressed-tensors")
        if qcfg.get("kv_cache_scheme"):
            raise UnsupportedArtifactError("a quantized KV cache (kv_cache_scheme) is not supported by compressor.load")
        if qcfg.get("quantization_status", "compressed") != "compressed":
            raise UnsupportedArtifactError(f"quantization_status {qcfg.get('quantization_status')!r}: expected 'compressed'")

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    info = ArtifactInfo(path=folder, manifest=manifest, format=qcfg.get("format") if qcfg else None)
    rotations = read_online_rotations(folder, manifest.get("online_transforms", []))

    with safe_open(str(folder / WEIGHTS_FILE), framework="pt") as tensors:
        schemes = _linear_schemes(model, qcfg) if qcfg else {}
        dense = {key: tensors.get_tensor(key).to(dtype) for key in tensors.keys()
                 if key.rpartition(".")[0] not in schemes}
        for name, (args, input_args, fmt) in schemes.items():
            linear = model.get_submodule(name)
            if linear.bias is not None:
                linear.bias = nn.Parameter(tensors.get_tensor(f"{name}.bias").to(dtype), requires_grad=False)
            state = _quantized_state(tensors, name, fmt, args, (linear.out_features, linear.in_features))
            module, kind = build_quantized_linear(name, linear, state, args, input_args, dtype, backend)
            info.layers[kind] += 1
            if kind == "dense_fallback":
                info.dense_fallbacks.append(name)
            if name in rotations:
                module = InputRotation(rotations[name].to(torch.float32), module)
                info.online_rotations.append(name)
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent), attr, module)
    embedding_key = f"{_module_name(model, model.get_input_embeddings())}.weight"
    head = model.get_output_embeddings()
    if embedding_key in dense and head_matches_table(head, dense[embedding_key]):  # see export.head_quant
        padding_idx = getattr(model.get_input_embeddings(), "padding_idx", None)
        model.set_input_embeddings(HeadTiedEmbedding(head, dtype, padding_idx))
        del dense[embedding_key]
        info.embedding_from_head = True
    runtime_matrices = {key.rpartition(".")[0]: dense.pop(key) for key in list(dense)
                        if key.rpartition(".")[2] == RUNTIME_OUTPUT_MATRIX}
    missing_rotations = set(rotations) - set(info.online_rotations)
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


def weight_bytes(model: nn.Module, include_runtime_layouts: bool = True) -> dict[str, int]:
    """Bytes of the weights a model holds, by kind; QuantLinear's lazily built CPU int4 layout counted if present."""
    seen: set[int] = set()
    out: Counter = Counter()

    def add(kind: str, t: torch.Tensor | None) -> None:
        if t is None or t.device.type == "meta":
            return
        key = t.untyped_storage().data_ptr()
        if key in seen:
            return
        seen.add(key)
        out[kind] += t.untyped_storage().nbytes()

    for name, module in model.named_modules():
        for pname, t in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
            if pname in ("inv_freq", "original_inv_freq"):
                continue
            if module is getattr(model, "lm_head", None):
                kind = "lm_head"
            elif isinstance(module, (QuantLinear, FusedProjection)):
                kind = "quantized_linears"
            elif isinstance(module, InputRotation):
                kind = "online_rotations"
            elif isinstance(module, nn.Embedding):
                kind = "embedding"
            elif isinstance(module, (nn.Linear, DequantizedLinear)):
                kind = "dense_linears"
            else:
                kind = "other"
            add(kind, t)
        if include_runtime_layouts and isinstance(module, QuantLinear):  # caches built on first use
            for t in [*(getattr(module, "_native_int4", ()) or ()), module._int8_padded]:
                if isinstance(t, torch.Tensor):
                    add("quantized_linears_cpu_layout", t)
    out["total"] = sum(out.values())
    return dict(out)


def _module_name(model: nn.Module, module: nn.Module) -> str:
    return next(name for name, m in model.named_modules() if m is module)
