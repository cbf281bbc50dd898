"""The memory estimate's arithmetic on a tiny config: each part from the shapes, the peak phase, the modes."""

from __future__ import annotations

import pytest

from compressor.execution import memory
from compressor.execution.memory import ModelShape, estimate_peak
from compressor.spec import Recipe

TINY = {"vocab_size": 100, "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 2,
        "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4, "tie_word_embeddings": True}
LAYER = 8 * 4 * (2 * 2 + 2 * 1) + 3 * 8 * 16 + 2 * 8  # q/k/v/o + gate/up/down + two norms = 592
PARAMS = 2 * LAYER + 2 * 100 * 8 + 8  # layers, embeddings and the untied head, final norm = 2792
NO_EVAL = {"datasets": []}
GPTQ = [{"quantize": {"weights": {"bits": 4, "strategy": "channel", "method": "gptq"}}}]
RTN = [{"quantize": {"weights": {"bits": 4, "strategy": "channel"}}}]


def recipe(**fields) -> Recipe:
    return Recipe.model_validate(fields)


def test_shape_from_config():
    m = ModelShape.from_config(TINY)
    assert (m.layer_params, m.params, m.tied) == (LAYER, PARAMS, True)
    assert ModelShape.from_config({"text_config": TINY}).params == PARAMS  # Gemma 3 nests the text model
    with pytest.raises(ValueError, match="config.json has no 'hidden_size'"):
        ModelShape.from_config({k: v for k, v in TINY.items() if k != "hidden_size"})


def test_weights_in_the_working_dtype_with_the_head_copy():
    fp32 = estimate_peak(TINY, recipe(stages=RTN, eval=NO_EVAL), "cpu")
    assert fp32.parts["weights"] == (PARAMS - 800) * 4 and fp32.parts["untied_head"] == 800 * 4
    assert fp32.parts["process_baseline"] == memory.PROCESS_BASELINE_BYTES["cpu"]
    assert fp32.parts["quantized_codes"] == 2 * LAYER
    assert "reference_hidden" not in fp32.parts and "reference_head" not in fp32.parts  # no evaluation
    bf16 = estimate_peak(TINY, recipe(stages=RTN, eval=NO_EVAL, execution={"dtype": "bfloat16"}), "cpu")
    assert bf16.parts["weights"] == (PARAMS - 800) * 2
    gpu = estimate_peak(TINY, recipe(stages=RTN, eval=NO_EVAL), "cuda")  # auto: bfloat16 on a GPU
    assert gpu.parts["weights"] == (PARAMS - 800) * 2
    assert gpu.parts["process_baseline"] == memory.CUDA_CONTEXT_BYTES
    assert fp32.total_bytes == sum(fp32.parts.values())
    assert fp32.phase == "export" and fp32.parts["export_buffers"] == memory.EXPORT_WEIGHT_COPIES * 2 * LAYER * 4
    bare = estimate_peak(TINY, recipe(stages=RTN, eval=NO_EVAL, export={"format": "none"}), "cpu")
    assert "export_buffers" not in bare.parts and bare.total_bytes == fp32.total_bytes - fp32.parts["export_buffers"]


def test_gptq_phase_counts_activations_and_float64_hessians():
    r = recipe(stages=GPTQ, eval=NO_EVAL, calibration={"samples": 4, "seqlen": 32}, export={"format": "none"})
    est = estimate_peak(TINY, r, "cpu")
    assert est.phase == "0:quantize"
    assert est.parts["calibration_activations"] == 2 * 4 * 32 * 8 * 4
    hessians = (2 * 8 * 8 + 8 * 8 + 16 * 16) * 8  # q/k/v and gate/up share one each; o_proj; down_proj
    assert est.parts["gptq_hessians"] == hessians + 3 * 8 * 16 * 8
    width = memory.LAYER_HIDDEN_TENSORS * 8 + memory.LAYER_FFN_TENSORS * 16
    assert est.parts["layer_forward"] == 4 * 32 * width * 4 + 2 * 4 * 2 * 32 * 32 * 4
    more = estimate_peak(TINY, recipe(stages=GPTQ, eval=NO_EVAL, calibration={"samples": 8, "seqlen": 32},
                                      export={"format": "none"}), "cpu")
    assert more.parts["calibration_activations"] == 2 * est.parts["calibration_activations"]
    cuda = estimate_peak(TINY, r, "cuda")
    assert cuda.parts["gptq_hessians"] == hessians // 2 + 3 * 8 * 16 * 8  # fp32 accumulation on a GPU


def test_a_layer_wise_stage_working_set_stays_under_the_evaluation_on_the_cpu():
    ev = {"datasets": ["wiki"], "max_tokens": 256, "window": 64}
    r = recipe(stages=GPTQ, eval=ev, calibration={"samples": 4, "seqlen": 32})
    cpu, cuda = estimate_peak(TINY, r, "cpu"), estimate_peak(TINY, r, "cuda")
    alone = estimate_peak(TINY, recipe(stages=GPTQ, eval=NO_EVAL, calibration={"samples": 4, "seqlen": 32},
                                       export={"format": "none"}), "cpu")
    assert cpu.phase == cuda.phase == "eval"
    share = memory.LINGERING_SHARE  # glibc keeps part of GPTQ's freed blocks
    assert cpu.parts["gptq_hessians (held)"] == int(share * alone.parts["gptq_hessians"])
    assert cpu.parts["layer_forward (held)"] == int(share * alone.parts["layer_forward"])
    assert not any(k.endswith("(held)") for k in cuda.parts)  # the GPU counts live allocations only


def test_eval_logits_hidden_states_and_the_reference():
    ev = {"datasets": ["wiki", "news"], "max_tokens": 256, "window": 64, "kl": True, "original": True}
    est = estimate_peak(TINY, recipe(stages=RTN, eval=ev), "cpu")
    assert est.phase == "eval"
    rows = 63  # window - 1 positions are predicted; softmaxes are taken up to 512 rows at a time
    assert est.parts["eval_logits"] == memory.EVAL_LOGIT_COPIES_WITH_REFERENCE * rows * 100 * 4
    assert est.parts["eval_hidden"] == 3 * 4 * 64 * 8 * 4  # 4 windows of one dataset at a time
    assert est.parts["reference_hidden"] == 2 * 4 * 64 * 8 * 4  # the original's final states of both datasets, for KL
    assert "reference_head" not in est.parts  # quantize-only: the model's own head stays the original's
    plain = estimate_peak(TINY, recipe(stages=RTN, eval={**ev, "kl": False, "original": False}), "cpu")
    assert plain.parts["eval_logits"] == memory.EVAL_LOGIT_COPIES * rows * 100 * 4
    assert "reference_hidden" not in plain.parts
    rotated = estimate_peak(TINY, recipe(stages=[{"hadamard": {}}, *RTN], eval=ev), "cpu")
    assert rotated.parts["reference_head"] == 800 * 4  # a stage rewrites the head: the original's is kept
    long = estimate_peak(TINY, recipe(stages=RTN, eval={**ev, "window": 2048, "max_tokens": 4096}), "cpu")
    assert long.parts["eval_logits"] == memory.EVAL_LOGIT_COPIES_WITH_REFERENCE * 2047 * 100 * 4  # 2^24 logits hold all 2047 rows
    big_vocab = estimate_peak({**TINY, "vocab_size": 2**17}, recipe(stages=RTN, eval={**ev, "window": 2048, "max_tokens": 4096}), "cpu")
    assert big_vocab.parts["eval_logits"] == memory.EVAL_LOGIT_COPIES_WITH_REFERENCE * 128 * 2**17 * 4  # 128 rows per chunk


def test_sequential_holds_one_layer_plus_the_embedding_or_the_head():
    r = recipe(stages=GPTQ, eval=NO_EVAL)
    resident, sequential = estimate_peak(TINY, r, "cpu", "resident"), estimate_peak(TINY, r, "cpu", "sequential")
    assert resident.parts["weights"] + resident.parts["untied_head"] == PARAMS * 4
    assert "untied_head" not in sequential.parts  # the embedding and the head are loaded one at a time
    assert sequential.parts["weights"] == (LAYER + 800 + 8) * 4
    assert sequential.total_bytes < resident.total_bytes
    assert (resident.parts["quantized_codes"], sequential.parts["quantized_codes"]) == (2 * LAYER, LAYER)  # finished layers on disk


def test_ostquant_keeps_the_whole_model_and_counts_training_state():
    stages = [{"ostquant": {"steps": 2, "batch_size": 2}}, *GPTQ]
    r = recipe(stages=stages, eval=NO_EVAL, calibration={"samples": 4, "seqlen": 32})
    est = estimate_peak(TINY, r, "cpu", "sequential")  # end-to-end training: sequential does not apply
    assert est.phase == "0:ostquant"
    assert est.parts["weights"] + est.parts["untied_head"] == PARAMS * 4
    rotations = 8 * 8 + 2 * 1 * 4 * 4
    assert est.parts["ostquant_parameters"] == rotations * 8 * 4
    assert est.parts["ostquant_logits"] == 6 * 2 * 32 * 100 * 4
    # activation checkpointing (the default): one layer's transformed weights and intermediates at a time
    assert est.parts["ostquant_effective_weights"] == memory.OSTQUANT_WEIGHT_COPIES * LAYER * 4
    stages[0]["ostquant"]["activation_checkpointing"] = False
    plain = estimate_peak(TINY, recipe(stages=stages, eval=NO_EVAL, calibration={"samples": 4, "seqlen": 32}), "cpu")
    assert plain.parts["ostquant_effective_weights"] == memory.OSTQUANT_WEIGHT_COPIES * 2 * LAYER * 4
    assert plain.parts["ostquant_activations"] > est.parts["ostquant_activations"]


def test_ostquant_warm_start_is_a_layer_wise_phase_of_its_own():
    """Many warm-start samples on a short end-to-end batch: the layer walk's chains are the peak, counted from its own samples."""
    stages = [{"ostquant": {"steps": 2, "batch_size": 1, "warm_start": {"samples": 512, "batch_size": 1}}}, *RTN]
    est = estimate_peak(TINY, recipe(stages=stages, eval=NO_EVAL, calibration={"samples": 1024, "seqlen": 32}), "cpu")
    assert est.phase == "0:ostquant-warm-start"
    assert est.parts["calibration_activations"] == 4 * 512 * 32 * 8 * 4
    assert "ostquant_logits" not in est.parts
    fewer = estimate_peak(TINY, recipe(stages=stages, eval=NO_EVAL, calibration={"samples": 4, "seqlen": 32}), "cpu")
    assert fewer.phase == "0:ostquant"  # the warm start takes the first N of the 4 chunks there are


def test_bad_arguments_name_the_field():
    with pytest.raises(ValueError, match="device_kind: 'tpu' is not allowed; allowed: cpu, cuda"):
        estimate_peak(TINY, Recipe(), "tpu")
    with pytest.raises(ValueError, match="layers: 'auto' is not allowed"):
        estimate_peak(TINY, Recipe(), "cpu", "auto")
