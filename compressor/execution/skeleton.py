"""The stored model as a skeleton for sequential execution: modules and small tensors real, the big ones on meta.

Built from config.json without allocating the weights (accelerate's `init_empty_weights`);
buffers (the rotary tables) are computed as usual, the final norm and any other tensor
outside the decoder layers, embedding and head is read from the shards now. Embeddings stay
tied as stored: the head is read from the embedding's tensor when the checkpoint has none.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from compressor.execution.residency import SequentialLayers
from compressor.models.adapter import adapter_for
from compressor.models.shards import open_shards


def load_skeleton(model_dir: Path, work_dir: Path, device: torch.device, dtype: torch.dtype) -> tuple[nn.Module, SequentialLayers]:
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=False)
    model.eval()
    adapter = adapter_for(model)
    lazy = [*adapter.decoder_layers(model), adapter.embeddings(model), adapter.lm_head(model)]
    lazy_params = {id(p) for m in lazy for p in m.parameters()}
    with open_shards(model_dir) as tensors:
        for name, module in model.named_modules():
            for pname, p in list(module._parameters.items()):
                if p is None or id(p) in lazy_params:
                    continue
                key = f"{name}.{pname}" if name else pname
                value = tensors.get_tensor(key)
                module._parameters[pname] = nn.Parameter(
                    value.to(device=device, dtype=dtype if value.is_floating_point() else value.dtype), requires_grad=False)
    for module in model.modules():
        for bname, b in list(module._buffers.items()):
            if b is not None and b.device.type != "meta":
                module._buffers[bname] = b.to(device)
    return model, SequentialLayers(model, adapter, model_dir, work_dir, device, dtype, tied)
