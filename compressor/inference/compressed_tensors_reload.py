"""An artifact loaded back by compressed-tensors' own code, the check that the checkpoint is what it says.

Nothing of this project's loader is used: the model is built from config.json, compressed-tensors
applies the checkpoint's `transform_config` (its transform factories, input hooks) and
`quantization_config` (`apply_quantization_config`: schemes, KV-cache hooks, quantized forward),
`ModelCompressor.compress_model` lays the modules out as the checkpoint stores them, the stored
tensors are loaded strictly into that layout, and `ModelCompressor.decompress_model` decompresses
them. The model then runs with compressed-tensors' fake quantization of inputs and KV cache, which
is how vLLM's kernels treat them numerically. It is a dense reference, slow on purpose; serve with
`compressor.load` or an engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from compressor.export.format import CONFIG_FILE, MANIFEST, RuntimeRequirement, UnsupportedArtifactError, check_requirements
from compressor.models.shards import open_shards

# what compressed-tensors' own code runs: transform_config input transforms, fake-quantized activations of any width
COMPRESSED_TENSORS_RUNS = {RuntimeRequirement.ONLINE_INPUT_ROTATION, RuntimeRequirement.ACTIVATIONS_BELOW_8_BITS}


def _bridge_kv_cache(model: nn.Module, qconfig: Any) -> None:
    """Attach compressed-tensors' `QuantizedKVCache` to attention modules whose forward takes `cache`.

    compressed-tensors 0.20 recognizes an attention module by a `past_key_value(s)` argument;
    transformers 5.24 renamed it `cache`, so `apply_quantization_config` silently skips the
    KV-cache scheme. The cache module, its `k_scale`/`v_scale` and the quantization it runs are
    compressed-tensors' own; only the argument it is handed in by is bridged here.
    """
    import inspect

    from compressed_tensors.modeling.kvcache import KV_CACHE_ATTR, QuantizedKVCache
    from compressed_tensors.quantization import QuantizationScheme, QuantizationStatus
    from compressed_tensors.quantization.lifecycle.initialize import initialize_attn_qparams
    from compressed_tensors.quantization.utils import KV_CACHE_TARGETS

    def hand_in_cache(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        cache = getattr(module, KV_CACHE_ATTR)
        cache.add_past_key_values(kwargs.get("cache"))
        kwargs["cache"] = cache
        return args, kwargs

    found = 0
    for module in model.modules():
        if hasattr(module, "quantization_scheme") or not (hasattr(module, "k_proj") and hasattr(module, "v_proj")):
            continue
        if "cache" not in inspect.signature(module.forward).parameters:
            raise UnsupportedArtifactError(f"{type(module).__name__}: no 'cache' argument to hand a quantized KV cache in by")
        module.register_module(KV_CACHE_ATTR, QuantizedKVCache(model.config.get_text_config(decoder=True), module))
        module.register_forward_pre_hook(hand_in_cache, with_kwargs=True)
        scheme = QuantizationScheme(targets=list(KV_CACHE_TARGETS), input_activations=qconfig.kv_cache_scheme)
        initialize_attn_qparams(module, scheme, force_zero_point=False)
        module.quantization_scheme = scheme
        module.quantization_status = QuantizationStatus.COMPRESSED
        found += 1
    if not found:
        raise UnsupportedArtifactError("kv_cache_scheme is set but the model has no attention modules to quantize")


def load_with_compressed_tensors(folder: str | Path, dtype: torch.dtype = torch.float32) -> nn.Module:
    """The artifact in `folder` as a transformers model set up and decompressed by compressed-tensors (eval mode)."""
    import json

    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import QuantizationConfig, apply_quantization_config
    from compressed_tensors.transform import TransformConfig, apply_transform_config
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = Path(folder)
    manifest_path = folder / MANIFEST
    if manifest_path.is_file():  # e.g. learned Kronecker transforms, kept in a file compressed-tensors does not read
        check_requirements(json.loads(manifest_path.read_text()), COMPRESSED_TENSORS_RUNS, "compressed-tensors")
    qdict = json.loads((folder / CONFIG_FILE).read_text()).get("quantization_config")
    config = AutoConfig.from_pretrained(folder)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
    with open_shards(folder) as tensors:
        state = {key: tensors.get_tensor(key) for key in tensors.keys()}
    qconfig = tconfig = None
    if qdict:
        if qdict.get("quant_method") != "compressed-tensors":
            raise UnsupportedArtifactError(f"quant_method {qdict.get('quant_method')!r} is not compressed-tensors")
        if qdict.get("transform_config"):
            tconfig = TransformConfig.model_validate(qdict["transform_config"])
            apply_transform_config(model, tconfig)
        if qdict.get("config_groups") or qdict.get("kv_cache_scheme"):
            qconfig = QuantizationConfig.model_validate(
                {k: v for k, v in qdict.items() if k not in ("quant_method", "transform_config", "sparsity_config", "version")})
            apply_quantization_config(model, qconfig, show_progress=False)
            if qconfig.kv_cache_scheme is not None:
                _bridge_kv_cache(model, qconfig)
    compressor = ModelCompressor(quantization_config=qconfig, transform_config=tconfig)
    if qconfig is not None:
        compressor.compress_model(model)
        compressor.remove_decompression_hook(model)
    expected = model.state_dict()
    tied = bool(getattr(config, "tie_word_embeddings", False))
    missing = [k for k in expected if k not in state and not (tied and k == "lm_head.weight")]
    # a shared transform weight is stored once, under its first target (compressed-tensors' tied keys)
    shared = {k for k in missing if "_input.weight" in k or "_output.weight" in k}
    unexpected = [k for k in state if k not in expected]
    if (set(missing) - shared) or unexpected:
        raise UnsupportedArtifactError(f"{folder}: tensors do not match compressed-tensors' layout: "
                                       f"missing {sorted(set(missing) - shared)[:5]}, unexpected {unexpected[:5]}")
    with torch.no_grad():
        for key, value in state.items():
            target = model.get_parameter(key) if key in dict(model.named_parameters(remove_duplicate=False)) else model.get_buffer(key)
            if target.shape != value.shape:
                raise UnsupportedArtifactError(f"{key}: stored shape {tuple(value.shape)} != expected {tuple(target.shape)}")
            target.copy_(value.to(target.dtype))
    if tied:
        model.tie_weights()
    if qconfig is not None:
        compressor.decompress_model(model)
        with torch.no_grad():  # fp4 decompresses to bf16; compute in the model's dtype
            for module in model.modules():
                weight = getattr(module, "weight", None)
                if hasattr(module, "quantization_scheme") and isinstance(weight, torch.Tensor) and weight.dtype != dtype:
                    module.weight.data = weight.data.to(dtype)
    return model.eval()
