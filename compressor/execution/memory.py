"""Peak memory of a job, estimated from the model's config.json and the recipe before anything loads.

Torch-free: the API calls it at submit time (`api/` never imports torch) to refuse a job no
configured worker can hold, and the pipeline calls it to refuse an end-to-end method (OSTQuant,
ProSparse training) that cannot fit, before its weights load. The report puts the estimate
beside the measured peak.

The model is the sum of what is resident for the whole job (process baseline, the weights in
the working dtype with the untied head copy, the quantized codes, what the evaluation keeps of
the original) plus the largest of the phases that run one after another (a stage's working
set, export, the evaluation's logits). Each phase is counted from its tensors' shapes; the few
constant factors (how many activation-sized tensors a decoder layer keeps alive, how many
weight-sized copies OSTQuant's step holds) were read off measured runs on the bundled model
(`tests/compressor/execution/test_memory_measured.py`: RTN, GPTQ, OSTQuant within 25%).
On the CPU the measured peak is RSS, and glibc keeps freed blocks under 32 MB in the heap,
so a stage's working set can linger under the evaluation's; that is the estimate's main error
(GPTQ reads ~10% low on the bundled model), and it shrinks as tensors grow with the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

MiB = 2**20
GiB = 2**30

# RSS of a job process on the CPU once torch, transformers, tokenizers and the compressor's
# stage handlers are imported and the tokenizer loaded: 700-720 MB measured on this machine
# (torch 2.13 CPU wheel, transformers 5); a CUDA process adds the CUDA context on the host.
PROCESS_BASELINE_BYTES = {"cpu": 700 * MiB, "cuda": 1500 * MiB}
# the CUDA context and cuBLAS/cuDNN workspaces on the GPU itself
CUDA_CONTEXT_BYTES = 600 * MiB

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8}

# Activation-sized tensors ([batch, seqlen, width]) a decoder layer's forward keeps alive at
# once, in units of the hidden width (residual, norm output, q/k/v/o, rotary copies) and of the
# FFN width (gate, up, act(gate)*up): from the measured GPTQ and OSTQuant runs.
LAYER_HIDDEN_TENSORS = 10
LAYER_FFN_TENSORS = 4
# What backward keeps per decoder layer in OSTQuant's training, in the same units (each
# layer's inputs of every op), and its attention probabilities (heads × seqlen²) twice.
TRAIN_HIDDEN_TENSORS = 14
TRAIN_FFN_TENSORS = 5
# OSTQuant rebuilds every decoder weight from the transforms each step: the transformed
# weights, their fake-quantized copies and the saved intermediates and grads of both, in fp32
# (fit on the bundled model: 5.6 weight-sized copies from the second step on, seqlen 512, batch 1).
OSTQUANT_WEIGHT_COPIES = 6
# Export packs each quantized linear and writes the shards: about one fp32 copy of the decoder
# weights at its peak (measured: 390 MiB above the quantized model for the bundled model).
EXPORT_WEIGHT_COPIES = 1
# Evaluation (compressor.eval.evaluation): the final hidden states of every window, walked a layer
# at a time in batches of EVAL_BATCH windows, then vocabulary-wide rows EVAL_CHUNK_VALUES logits
# at a time (128 positions of a 128k vocabulary): the logits and their log-softmax; for KL also the original's log-softmax, its exp, the
# difference and the product.
EVAL_LOGIT_COPIES = 2
EVAL_LOGIT_COPIES_WITH_REFERENCE = 5
EVAL_BATCH = 2  # compressor.execution.layer_forward.BATCH_WINDOWS
EVAL_CHUNK_VALUES = 2**24  # compressor.eval.perplexity.CHUNK_VALUES
CALIBRATION_BATCH = 8  # chunks per layer forward in layer-wise calibration (compressor.quant.calibration)
LAYER_WISE_STAGES = ("quantize", "affinequant", "flatquant")  # stages that walk the calibration chunks a decoder layer at a time
# How much of such a stage's working set is still resident when the evaluation peaks: the same
# GPTQ job on the bundled model measured 1924, 2254 and 2349 MiB (none to all of it kept), so half.
LINGERING_SHARE = 0.5


@dataclass(frozen=True)
class ModelShape:
    """The widths of a decoder-only model that memory depends on, read from its config.json."""

    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ModelShape:
        cfg = config.get("text_config") or config  # Gemma 3 multimodal configs nest the text model
        try:
            hidden, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
            return cls(
                vocab=int(cfg["vocab_size"]), hidden=hidden, intermediate=int(cfg["intermediate_size"]),
                layers=int(cfg["num_hidden_layers"]), heads=heads,
                kv_heads=int(cfg.get("num_key_value_heads") or heads),
                head_dim=int(cfg.get("head_dim") or hidden // heads),
                tied=bool(cfg.get("tie_word_embeddings", False)),
            )
        except KeyError as e:
            raise ValueError(f"config.json has no {e.args[0]!r}: cannot estimate the job's memory") from None

    @property
    def layer_params(self) -> int:
        """Weights of one decoder layer: q/k/v/o, gate/up/down, two norms."""
        attn = self.hidden * self.head_dim * (2 * self.heads + 2 * self.kv_heads)
        return attn + 3 * self.hidden * self.intermediate + 2 * self.hidden

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def params(self) -> int:
        """All weights as the job holds them: the head is its own copy even when the config ties it."""
        return self.layers * self.layer_params + 2 * self.embedding_params + self.hidden


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak bytes of one job on one device kind, with the parts that make it up (bytes each)."""

    total_bytes: int
    device_kind: str
    layers: str
    parts: dict[str, int] = field(default_factory=dict)
    phase: str = ""  # the phase the peak falls in (a stage name, "eval")

    @property
    def total_mb(self) -> float:
        return self.total_bytes / MiB

    def describe(self) -> str:
        top = sorted(self.parts.items(), key=lambda kv: -kv[1])[:4]
        return f"{format_bytes(self.total_bytes)} ({', '.join(f'{k} {format_bytes(v)}' for k, v in top)})"


def format_bytes(n: float) -> str:
    return f"{n / GiB:.2f} GiB" if n >= GiB else f"{n / MiB:.0f} MiB"


def _working_dtype(recipe: Any, device_kind: str) -> str:
    dtype = recipe.execution.dtype
    if dtype == "auto":
        return "bfloat16" if device_kind == "cuda" else "float32"
    return dtype


def _stage_kind(cfg: Any) -> str:
    return type(cfg).stage if hasattr(type(cfg), "stage") else type(cfg).__name__


def _layer_forward_bytes(m: ModelShape, batch: int, seqlen: int, act: int) -> int:
    """One decoder layer's forward on `batch` chunks: activation-sized tensors and attention scores (fp32)."""
    width = LAYER_HIDDEN_TENSORS * m.hidden + LAYER_FFN_TENSORS * m.intermediate
    return batch * seqlen * width * act + 2 * batch * m.heads * seqlen * seqlen * 4


def _calibration_bytes(m: ModelShape, recipe: Any, act: int) -> int:
    """Layer-wise calibration: every chunk's hidden states, as inputs and as outputs of the layer."""
    cal = recipe.calibration
    return 2 * cal.samples * cal.seqlen * m.hidden * act


def _gptq_bytes(m: ModelShape, acc: int) -> int:
    """One layer's Hessians (q/k/v share one, gate/up one, o_proj, down_proj) and GPTQ's working copies of the widest linear."""
    attn_in = m.heads * m.head_dim
    hessians = (2 * m.hidden * m.hidden + attn_in * attn_in + m.intermediate * m.intermediate) * acc
    work = 3 * m.hidden * m.intermediate * 8  # W, codes and the error block in float64
    return hessians + work


def _ostquant_bytes(m: ModelShape, cfg: Any, recipe: Any, weight_bytes_f32: int) -> tuple[dict[str, int], int]:
    """OSTQuant's training: its transforms with grads and Adam moments, effective weights, activations, KL logits.

    With activation checkpointing (the default) backward keeps each decoder layer's input and
    rebuilds one layer at a time (its transformed weights and intermediates); without it,
    every layer's are kept until backward reaches them.
    """
    seqlen, batch = recipe.calibration.seqlen, cfg.batch_size
    rot = (m.hidden * m.hidden if "r1" in cfg.rotations else 0) + (
        m.layers * m.kv_heads * m.head_dim * m.head_dim if "r2" in cfg.rotations else 0)
    params = rot * 8 * 4  # float64 rotations, their grads and two Adam moments
    live_layers = 1 if cfg.activation_checkpointing else m.layers
    effective = OSTQUANT_WEIGHT_COPIES * live_layers * m.layer_params * 4
    width = TRAIN_HIDDEN_TENSORS * m.hidden + TRAIN_FFN_TENSORS * m.intermediate
    acts = live_layers * (batch * seqlen * width * 4 + 2 * batch * m.heads * seqlen * seqlen * 4)
    if cfg.activation_checkpointing:
        acts += m.layers * batch * seqlen * m.hidden * 4  # the saved layer inputs
    # teacher and student logits, both log-softmaxes, the student's grad, the top-k gathers
    logits = 6 * batch * seqlen * m.vocab * 4
    parts = {"ostquant_parameters": params, "ostquant_effective_weights": effective,
             "ostquant_activations": acts, "ostquant_logits": logits}
    return parts, sum(parts.values())


def _prosparse_bytes(m: ModelShape, cfg: Any, recipe: Any, weight_bytes: int) -> tuple[dict[str, int], int]:
    """ProSparse fine-tuning: grads and two AdamW moments of every weight, activations, logits."""
    seqlen, batch = recipe.calibration.seqlen, cfg.batch_size
    width = TRAIN_HIDDEN_TENSORS * m.hidden + TRAIN_FFN_TENSORS * m.intermediate
    parts = {
        "prosparse_grads_and_moments": 3 * weight_bytes,
        "prosparse_activations": m.layers * (batch * seqlen * width * 4 + 2 * batch * m.heads * seqlen * seqlen * 4),
        "prosparse_logits": 3 * batch * seqlen * m.vocab * 4,
    }
    return parts, sum(parts.values())


def estimate_peak(
    model_config: dict[str, Any],
    recipe: Any,
    device_kind: Literal["cpu", "cuda"] = "cpu",
    layers: Literal["resident", "sequential"] = "resident",
) -> MemoryEstimate:
    """Peak memory of `recipe` on the model of `model_config` (config.json's dict) on a `device_kind` worker.

    `resident`: the whole model sits on the device. `sequential`: the weights term is one
    decoder layer plus embeddings and head (the rest waits on disk/CPU); end-to-end training
    (OSTQuant, ProSparse) always needs the whole model resident.
    """
    if device_kind not in ("cpu", "cuda"):
        raise ValueError(f"device_kind: {device_kind!r} is not allowed; allowed: cpu, cuda")
    if layers not in ("resident", "sequential"):
        raise ValueError(f"layers: {layers!r} is not allowed; allowed: resident, sequential")
    m = ModelShape.from_config(model_config)
    dtype = _working_dtype(recipe, device_kind)
    wb = DTYPE_BYTES[dtype]
    act = 4  # layer-wise calibration keeps activations in fp32 on the CPU, the working dtype on a GPU
    if device_kind == "cuda":
        act = wb
    acc = 8 if device_kind == "cpu" else 4  # Hessian accumulation dtype (compressor.execution.device.accumulation_dtype)

    stages = recipe.stage_configs()
    end_to_end = any(_stage_kind(c) in ("ostquant", "prosparse") for c in stages)
    full_weights = m.params * wb
    held = 1 if layers == "sequential" and not end_to_end else m.layers  # decoder layers in memory at once
    one_at_a_time = held == 1  # sequential: the embedding and the head are loaded one at a time, never together
    weights = (held * m.layer_params + (1 if one_at_a_time else 2) * m.embedding_params + m.hidden) * wb
    parts: dict[str, int] = {
        "process_baseline": PROCESS_BASELINE_BYTES[device_kind] if device_kind == "cpu" else CUDA_CONTEXT_BYTES,
        "weights": weights - (m.embedding_params * wb if m.tied and not one_at_a_time else 0),
        "untied_head": m.embedding_params * wb if m.tied and not one_at_a_time else 0,  # the store unties a resident model
    }
    ev = recipe.eval
    reference = bool(ev.datasets) and (ev.original or ev.kl)
    windows = max(1, ev.max_tokens // ev.window)  # per dataset; datasets are scored one after another
    if reference and any(_stage_kind(c) != "quantize" for c in stages):
        parts["reference_head"] = m.embedding_params * wb  # the original lm_head, kept when a stage rewrites the model's
    if reference and ev.kl:
        parts["reference_hidden"] = len(ev.datasets) * windows * ev.window * m.hidden * act  # the original's final states

    phases: dict[str, dict[str, int]] = {}
    cal = recipe.calibration
    for i, cfg in enumerate(stages):
        kind, phase = _stage_kind(cfg), {}
        if kind == "quantize" and cfg.weights is not None and cfg.weights.method == "gptq":
            phase["calibration_activations"] = _calibration_bytes(m, recipe, act)
            phase["layer_forward"] = _layer_forward_bytes(m, min(CALIBRATION_BATCH, cal.samples), cal.seqlen, act)
            phase["gptq_hessians"] = _gptq_bytes(m, acc)
        elif kind == "quantize":
            if getattr(cfg, "activations", None) is not None or getattr(cfg, "kv_cache", None) is not None:
                phase["layer_forward"] = _layer_forward_bytes(m, min(CALIBRATION_BATCH, cal.samples), cal.seqlen, act)
        elif kind == "ostquant":
            phase, _ = _ostquant_bytes(m, cfg, recipe, full_weights)
            if cfg.warm_start is not None:  # before the end-to-end steps: a layer at a time, like the layer-wise stages
                w = cfg.warm_start
                phases[f"{i}:ostquant-warm-start"] = {
                    "ostquant_parameters": phase["ostquant_parameters"],
                    # the fp and quantized chains, the unquantized layer's outputs, the next layer's inputs
                    "calibration_activations": 4 * min(w.samples, cal.samples) * cal.seqlen * m.hidden * 4,
                    "layer_forward": 3 * _layer_forward_bytes(m, w.batch_size, cal.seqlen, 4),
                }
        elif kind == "prosparse":
            phase, _ = _prosparse_bytes(m, cfg, recipe, full_weights)
        elif kind in ("affinequant", "flatquant"):
            phase["calibration_activations"] = 3 * _calibration_bytes(m, recipe, act)  # inputs, fp targets, quantized outputs
            phase["layer_forward"] = 3 * _layer_forward_bytes(m, cfg.batch_size, cal.seqlen, 4)
        elif kind == "hadamard":
            phase["fusion"] = 2 * m.embedding_params * 8  # the embedding/head products in float64
        phases[f"{i}:{kind}"] = phase
    if recipe.export.format != "none":
        phases["export"] = {"export_buffers": EXPORT_WEIGHT_COPIES * held * m.layer_params * 4}  # streamed per layer when sequential
    if ev.datasets:
        rows = max(1, min(EVAL_CHUNK_VALUES // m.vocab, ev.window - 1))
        copies = EVAL_LOGIT_COPIES_WITH_REFERENCE if (reference and ev.kl) else EVAL_LOGIT_COPIES
        phases["eval"] = {"eval_logits": copies * rows * m.vocab * 4,
                          "eval_hidden": 3 * windows * ev.window * m.hidden * act,  # inputs, outputs, after the final norm
                          "eval_forward": _layer_forward_bytes(m, min(EVAL_BATCH, windows), ev.window, act)}
    if any(_stage_kind(c) == "quantize" and c.weights is not None for c in stages):
        parts["quantized_codes"] = held * m.layer_params  # int8 codes kept with each quantized linear (sequential: on disk)
    # On the CPU a layer-wise stage's working set (batch-sized tensors under glibc's 32 MB mmap
    # threshold) may stay in the heap, so export and evaluation come on top of part of it; an
    # end-to-end stage's big tensors are unmapped when freed. The GPU counts live allocations only.
    lingering = {}
    if device_kind == "cpu":
        layer_wise = [(k, v) for k, v in phases.items() if k.split(":")[-1] in LAYER_WISE_STAGES and v]
        worst = max(layer_wise, key=lambda kv: sum(kv[1].values()), default=("", {}))[1]
        lingering = {k: int(v * LINGERING_SHARE) for k, v in worst.items()}
    finishing = {k: v for k, v in phases.items() if k in ("export", "eval")}
    candidates = {k: v for k, v in phases.items() if k not in finishing}
    for name, phase in finishing.items():
        candidates[name] = {**{f"{k} (held)": v for k, v in lingering.items()}, **phase}
    phase_name, phase = max(candidates.items(), key=lambda kv: sum(kv[1].values()), default=("", {}))
    parts.update(phase)
    parts = {k: int(v) for k, v in parts.items() if v}
    return MemoryEstimate(total_bytes=sum(parts.values()), device_kind=device_kind, layers=layers, parts=parts,
                          phase=phase_name)

