"""Quantize the tied embedding / lm_head of an exported int4 artifact: int8 per channel or int4 per group.

Why: the decoder export leaves lm_head in bf16 (`ignore: ["lm_head"]`), and in a small model
that one tied 49152×576 table is as many bytes as all int4 decoder linears together and the
largest single read of every decode step. Two trade-offs (bench/decode.py measures both):

* `bits=8` (the default): symmetric per-channel int8 RTN. Quality-neutral (SmolLM2-135M: wiki
  perplexity within 0.1% of the bf16 head), half the head's bytes;
* `bits=4`: symmetric group-wise int4 RTN with MSE clip search, a quarter of the bytes, at a
  real quality cost (SmolLM2-135M, group 32: +14.5% wiki perplexity) — an explicit option.

Either way the artifact is rewritten so that:

* `lm_head` is one more pack-quantized linear (its own config group, no longer ignored),
  which transformers (compressed-tensors) loads as it loads every other quantized linear;
* `model.embed_tokens.weight` is stored as the head's dequantized values in bf16 and the
  embeddings are untied, so a stock loader computes the same function as `compressor.load`,
  which reads the lookup rows from the int4 head (`HeadTiedEmbedding`) instead of keeping the
  table;
* the manifest records it (`lm_head_quantization`) and drops vLLM from the servable engines:
  its compressed-tensors path handled only linear layers, not the vocab-parallel head, until
  vllm-project/vllm#37291 (2026-03); not verified here.

It is a post-export step and not a recipe option: the job's own evaluation does not see it, so
its perplexity cost is measured on the rewritten artifact (bench/decode.py reports it).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from compressor.export.format import (
    CONFIG_FILE,
    MANIFEST,
    WEIGHT,
    WEIGHT_PACKED,
    WEIGHT_SCALE,
    WEIGHT_SHAPE,
    WEIGHTS_FILE,
    read_manifest,
    write_manifest,
)
from compressor.export.engines import engine_support, engine_table, engines_summary
from compressor.quant.quantizer import quantize_weight_rtn
from compressor.spec import WeightQuantConfig

EMBEDDING_KEY = "model.embed_tokens.weight"
HEAD = "lm_head"
STORED_DTYPE = torch.bfloat16


HEAD_BITS = (8, 4)


def head_weight_config(bits: int, group_size: int, clip_search: bool) -> WeightQuantConfig:
    """int8: per channel, plain RTN (no clipping is needed at 255 levels); int4: per group, optionally clip-searched."""
    if bits == 8:
        return WeightQuantConfig(bits=8, symmetric=True, strategy="channel")
    if bits == 4:
        return WeightQuantConfig(bits=4, symmetric=True, strategy="group", group_size=group_size, clip_search=clip_search)
    raise ValueError(f"lm_head bits must be one of {HEAD_BITS}, got {bits}")


def quantize_head_tensors(
    table: torch.Tensor, cfg: WeightQuantConfig
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """(lm_head pack-quantized tensors, the bf16 embedding table equal to their dequantized values).

    Symmetric, so the dequantized value is just code × scale on every loader (exact in fp32).
    On SmolLM2-135M int4 group 32 with the project's MSE clip search cost +18% wiki perplexity
    over the bf16 head, group-64 plain RTN +37% (1024 tokens; the resident sizes differ by ~3%).
    """
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

    q = quantize_weight_rtn(table.to(torch.float32), cfg)
    codes = q.codes.to(torch.int8)
    scales = q.scale.to(STORED_DTYPE).reshape(table.shape[0], -1)  # dequantize with the scales as stored
    dequantized = codes.to(torch.float32) * scales.to(torch.float32).repeat_interleave(q.group_size, dim=1)
    tensors = {
        f"{HEAD}.{WEIGHT_PACKED}": pack_to_int32(codes, cfg.bits).contiguous(),
        f"{HEAD}.{WEIGHT_SCALE}": scales.contiguous(),
        f"{HEAD}.{WEIGHT_SHAPE}": torch.tensor(list(table.shape), dtype=torch.int64),
    }
    return tensors, dequantized.to(STORED_DTYPE).contiguous()


def head_scheme(cfg: WeightQuantConfig) -> dict[str, Any]:
    return {
        "targets": [HEAD],
        "weights": {"num_bits": cfg.bits, "type": "int", "symmetric": True, "strategy": cfg.strategy,
                    "group_size": cfg.group_size, "dynamic": False, "observer": "minmax"},
    }


def quantize_lm_head(src: Path, dst: Path, group_size: int = 32, clip_search: bool = True, bits: int = 8) -> Path:
    """Copy the pack-quantized artifact `src` to `dst` with lm_head (and the embedding) in int8 or int4; returns dst.

    `group_size` and `clip_search` apply to int4 only.
    """
    cfg = head_weight_config(bits, group_size, clip_search)
    src, dst = Path(src), Path(dst)
    config = json.loads((src / CONFIG_FILE).read_text())
    qcfg = config.get("quantization_config") or {}
    if qcfg.get("format") != "pack-quantized":
        raise ValueError(f"{src}: lm_head quantization needs a pack-quantized artifact, got {qcfg.get('format')!r}")
    manifest = read_manifest(src)
    with safe_open(str(src / WEIGHTS_FILE), framework="pt") as f:
        state = {key: f.get_tensor(key) for key in f.keys()}
    if any(key.startswith(f"{HEAD}.{WEIGHT}_") for key in state):
        raise ValueError(f"{src}: lm_head is already quantized")
    head = state.pop(f"{HEAD}.{WEIGHT}", None)
    if head is None and not config.get("tie_word_embeddings", False):
        raise ValueError(f"{src}: neither lm_head.weight nor a tied embedding")
    if head is not None and not torch.equal(head, state[EMBEDDING_KEY]):
        raise ValueError(f"{src}: lm_head differs from the embedding; only a tied head is supported")
    table = state[EMBEDDING_KEY]
    if cfg.strategy == "group" and table.shape[1] % group_size:
        raise ValueError(f"group_size {group_size} does not divide the hidden size {table.shape[1]}")
    head_tensors, state[EMBEDDING_KEY] = quantize_head_tensors(table, cfg)
    state.update(head_tensors)

    dst.mkdir(parents=True, exist_ok=True)
    for path in src.iterdir():
        if path.is_file() and path.name not in (WEIGHTS_FILE, CONFIG_FILE, MANIFEST):
            shutil.copy2(path, dst / path.name)
    save_file(dict(sorted(state.items())), str(dst / WEIGHTS_FILE), metadata={"format": "pt"})
    groups = qcfg["config_groups"]
    groups[f"group_{len(groups)}"] = head_scheme(cfg)
    qcfg["ignore"] = [name for name in qcfg.get("ignore") or [] if name != HEAD]
    config["tie_word_embeddings"] = False
    (dst / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    manifest.pop("files", None)
    manifest["lm_head_quantization"] = {
        "bits": bits, "symmetric": True, "strategy": cfg.strategy, "group_size": cfg.group_size,
        "method": "rtn, mse clip search" if cfg.clip_search else "rtn",
        "embedding": f"stored as the dequantized lm_head (bf16); compressor.load reads it from the int{bits} head",
    }
    support = engine_support(qcfg, manifest.get("runtime_requirements", []), lm_head_quantized=True)
    manifest["engines"], manifest["engine_support"] = engines_summary(support), engine_table(support)
    write_manifest(dst, manifest)
    return dst
