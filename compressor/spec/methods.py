"""The configs of the transform and sparsity stages: hadamard, affinequant, ostquant, flatquant, prosparse.

Each carries its recipe key as `stage`, the one place the name is written.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from compressor.spec.base import StrictModel
from compressor.spec.quant import ActivationQuantConfig, WeightQuantConfig


class HadamardConfig(StrictModel):
    """Fixed random-Hadamard rotations in the QuaRot style (fused offline + online where needed)."""

    stage: ClassVar[str] = "hadamard"

    seed: int = Field(0, ge=0, description="seed of the random sign flips")
    r1: bool = Field(True, description="rotate the residual stream (fused into all weights)")
    r2: bool = Field(True, description="rotate each value head on the v_proj -> o_proj path (fused)")
    online_down_proj: bool = Field(True, description="online Hadamard on the down_proj input")
    online_qk: Literal["auto", "on", "off"] = Field(
        "auto", description="Hadamard on Q and K after RoPE; 'auto' = when the recipe's last quantize stage quantizes the KV cache"
    )


class AffineQuantConfig(StrictModel):
    """AffineQuant: learned equivalent affine transforms and weight clipping, trained block by block (OmniQuant loop)."""

    stage: ClassVar[str] = "affinequant"

    weights: WeightQuantConfig = Field(default_factory=WeightQuantConfig, description="weight quantizer (method rtn: rounding with learned clipping)")
    activations: ActivationQuantConfig | None = Field(None, description="dynamic per-token input quantization (W4A4); none = weight-only")
    epochs: int = Field(20, ge=1, le=200, description="passes over the calibration set per decoder layer")
    batch_size: int = Field(1, ge=1, le=64, description="calibration samples per optimizer step")
    mask: Literal["gradual", "diagonal"] = Field(
        "gradual", description="'gradual': unlocked band grows from the diagonal to dense; 'diagonal': held at the diagonal (OmniQuant-style scales)"
    )
    stability_factor: float = Field(0.01, gt=0.0, le=1.0, description="damping of unlocked off-diagonals (sf)")
    ln_matrix: Literal["diagonal", "dense"] = Field(
        "diagonal", description="norm -> q/k/v and norm -> gate/up: 'diagonal' folds into the norm (servable); 'dense' needs a matmul at run time (research)"
    )
    qk_matrix: bool = Field(True, description="learn a RoPE-commuting matrix per KV head between q_proj and k_proj")
    alpha: float = Field(0.5, ge=0.0, le=1.0, description="SmoothQuant migration strength of the diagonal's initial value")
    transform_lr: float = Field(5e-3, gt=0.0, le=10.0, description="AdamW learning rate of the affine matrices")
    clip_lr: float = Field(1e-2, gt=0.0, le=10.0, description="AdamW learning rate of the learnable weight clipping")
    lr_schedule: Literal["cosine", "constant"] = Field(
        "cosine", description="per layer: cosine decay to 0 over all its steps (steadier with few steps), or constant as in the paper"
    )
    learnable_clipping: bool = Field(True, description="learn per-row (or per-group) clipping factors of the weight range")
    loss: Literal["mse", "kl_top"] = Field(
        "mse", description="'mse' of the block outputs, or 'kl_top' of the logits the final norm and lm_head read from them"
    )
    kl_top_k: int = Field(1000, ge=1, le=1_000_000, description="teacher top-k tokens kept by the kl_top loss")
    kl_top_positions: int = Field(64, ge=1, le=8192, description="token positions per sample scored by the kl_top loss")
    aug_loss: bool = Field(False, description="also fit the original layer's output on the quantized inputs")
    min_dominance: float = Field(
        0.01, gt=0.0, lt=1.0, description="rows whose diagonal-dominance margin (relative to the diagonal) falls below this are repaired"
    )

    @model_validator(mode="after")
    def _consistent(self) -> AffineQuantConfig:
        if self.mask == "gradual" and self.epochs < 2:
            raise ValueError("the gradual mask needs epochs >= 2 (diagonal at the first epoch, dense at the last)")
        if self.weights.method != "rtn":
            raise ValueError("affinequant rounds weights itself (method 'rtn' with learned clipping); run GPTQ in a later quantize stage instead")
        if self.weights.clip_search:
            raise ValueError("affinequant learns the clipping range; set weights.clip_search: false")
        if self.weights.strategy == "tensor":
            raise ValueError("affinequant learns a clipping range per row or group; use strategy 'channel' or 'group'")
        return self


class OSTWarmStartConfig(StrictModel):
    """OSTQuant's layer-wise warm start: per decoder layer, its R2 and scales trained on the block output MSE, R1 held.

    Runs before the end-to-end steps, a layer at a time against the unquantized layer (the
    FlatQuant objective), with the recipe's quantizers on: many cheap steps for the per-layer
    transforms, which the end-to-end KL-Top steps (R1 included) then refine.
    """

    epochs: int = Field(4, ge=1, le=200, description="passes over the samples per decoder layer")
    samples: int = Field(32, ge=1, le=100_000, description="calibration samples the layers train on (the first N)")
    batch_size: int = Field(4, ge=1, le=64, description="calibration samples per optimizer step")
    rotation_lr: float | None = Field(None, gt=0.0, le=10.0, description="Cayley-Adam rate of R2 in the walk (none: the end-to-end rotation_lr)")
    scale_lr: float | None = Field(None, gt=0.0, le=10.0, description="Adam rate of the log-scales in the walk (none: the end-to-end scale_lr)")


class OSTQuantConfig(StrictModel):
    """OSTQuant: learnable orthogonal (Stiefel) and scaling transforms trained end to end with KL-Top.

    What is fake-quantized during training follows the next `quantize` stage of the recipe:
    weights for weight-only targets; activations and KV cache for W4A4-style targets (their
    weights are then quantized by that stage, typically GPTQ, on the fused model).
    """

    stage: ClassVar[str] = "ostquant"

    rotations: list[Literal["r1", "r2"]] = Field(default_factory=lambda: ["r1", "r2"], description="learned rotations: r1 residual, r2 per KV head on v->o")
    scales: bool = Field(True, description="learn the smoothing scales (norm->qkv, norm->up/gate, v->o, up->down, q/k per rotary pair)")
    online_down_proj: bool = Field(True, description="fixed online Hadamard on the down_proj input (R4)")
    online_qk: Literal["auto", "on", "off"] = Field("auto", description="Hadamard on Q/K after RoPE (R3); 'auto' = when the recipe's last quantize stage quantizes the KV cache")
    init: Literal["hadamard", "klt"] = Field("hadamard", description="rotation start: random Hadamard, or KLT (weight-row eigenvectors) times Hadamard")
    loss: Literal["kl_top", "cross_entropy", "kl"] = Field("kl_top", description="calibration objective against the unquantized model")
    k: int = Field(1000, ge=1, le=1_000_000, description="teacher top-k tokens of the KL-Top loss")
    renormalize: bool = Field(False, description="KL-Top: softmax over the top-k entries only")
    steps: int = Field(60, ge=0, le=100_000, description="optimizer steps")
    batch_size: int = Field(1, ge=1, le=256, description="calibration chunks per step")
    rotation_lr: float = Field(0.02, gt=0.0, le=10.0, description="Cayley-Adam learning rate of the rotations")
    scale_lr: float = Field(0.005, gt=0.0, le=10.0, description="Adam learning rate of the log-scales")
    lr_schedule: Literal["linear", "constant"] = Field("linear", description="'linear': both rates decay linearly to 0 over the steps (the paper's HF Trainer default); 'constant'")
    seed: int = Field(0, ge=0, description="seed of the random Hadamard starts")
    qsur_samples: int = Field(4, ge=0, le=256, description="calibration chunks used for the QSUR table (0 = skip)")
    activation_checkpointing: bool = Field(True, description="keep only each decoder layer's input for backward and recompute the layer (its transformed weights included) there: memory of one layer instead of the model's depth, about a third more time per step")
    warm_start: OSTWarmStartConfig | None = Field(None, description="layer-wise warm start of R2 and the scales before the end-to-end steps (none: they start from the Hadamards and 1)")

    @model_validator(mode="after")
    def _warm_start_has_work(self) -> OSTQuantConfig:
        if self.warm_start is not None and "r2" not in self.rotations and not self.scales:
            raise ValueError("warm_start trains the per-layer transforms (r2, scales); with neither learned there is nothing to warm-start")
        return self


INPUT_TRANSFORMS = ("attn_in", "o_in", "mlp_in", "down_in")


class FlatQuantConfig(StrictModel):
    """FlatQuant-style layer-wise learned transforms: a Kronecker transform and scales per linear input, with clipping.

    Trained decoder layer by decoder layer on the block output error against the unquantized
    layer, for the quantizers of the recipe's next quantize stage (which then quantizes the
    fused weights: GPTQ or RTN). The weight side is fused (float64); the activation side,
    (x ⊙ c)(L ⊗ R), runs online in front of its linears.
    """

    stage: ClassVar[str] = "flatquant"

    transforms: list[Literal["attn_in", "o_in", "mlp_in", "down_in"]] = Field(
        default_factory=lambda: list(INPUT_TRANSFORMS), min_length=1, max_length=4,
        description="inputs that get a learned transform: attn_in (q/k/v), o_in (o_proj), mlp_in (gate/up), down_in (down_proj)")
    kronecker: bool = Field(True, description="learn the two Kronecker factors (from a random Hadamard start); false = scales only")
    scales: bool = Field(True, description="learn a per-channel scale of each transformed input (SmoothQuant start)")
    alpha: float = Field(0.5, ge=0.0, le=1.0, description="SmoothQuant migration strength of the scales' start")
    weight_clipping: bool = Field(True, description="learn per-row weight clipping while training (the later quantize stage picks its own)")
    activation_clipping: bool = Field(True, description="learn a per-token clipping factor of each transformed int input (kept for evaluation)")
    samples: int | None = Field(32, ge=1, le=100_000, description="calibration samples the layers train on (the first N; none = all); the quantize stage after uses all")
    epochs: int = Field(6, ge=1, le=200, description="passes over the training samples per decoder layer")
    batch_size: int = Field(4, ge=1, le=64, description="calibration samples per optimizer step")
    transform_lr: float = Field(5e-3, gt=0.0, le=10.0, description="AdamW learning rate of the Kronecker factors and scales")
    clip_lr: float = Field(5e-2, gt=0.0, le=10.0, description="AdamW learning rate of the clipping factors")
    lr_schedule: Literal["cosine", "constant"] = Field("cosine", description="per layer: cosine decay to 0 over its steps, or constant")
    loss: Literal["mse", "kl_top"] = Field("mse", description="'mse' of the block outputs, or 'kl_top' of the logits the final norm and lm_head read from them")
    kl_top_k: int = Field(1000, ge=1, le=1_000_000, description="teacher top-k tokens kept by the kl_top loss")
    kl_top_positions: int = Field(64, ge=1, le=8192, description="token positions per sample scored by the kl_top loss")
    max_condition: float = Field(1e4, ge=10.0, le=1e12, description="largest condition number a transform may reach; above it the factors' singular values are clamped")
    online_qk: Literal["auto", "on", "off"] = Field("auto", description="Hadamard on Q/K after RoPE (R3); 'auto' = when the recipe's last quantize stage quantizes the KV cache")
    seed: int = Field(0, ge=0, description="seed of the Hadamard starts and of the loss's position draws")
    qsur_samples: int = Field(8, ge=0, le=256, description="calibration samples whose layer inputs give the QSUR table, before and after (0 = skip)")


class ProSparseConfig(StrictModel):
    """ProSparse: ReLU on the gate, sine-scheduled L1 on the FFN intermediate activation, FATReLU at the end.

    The λ schedule has one peak per stage: stage 1 holds `lambdas[0]` for `stage_steps[0]`
    steps (warm-up; 0 = ReLU-only adaptation), each later stage ramps from the previous peak
    to its own along a half sine. Total fine-tuning steps = sum(stage_steps). Defaults fit a
    135M model on CPU (a few hundred short steps); raise them on GPUs.
    """

    stage: ClassVar[str] = "prosparse"

    lambdas: list[float] = Field(default_factory=lambda: [0.0, 0.5, 2.0, 2.0], min_length=1, max_length=32, description="L1 peak per stage")
    stage_steps: list[int] = Field(default_factory=lambda: [20, 20, 60, 20], min_length=1, max_length=32, description="optimizer steps per stage")
    fatrelu_threshold: float = Field(0.01, ge=0.0, le=10.0, description="final activation threshold: gate outputs <= t become 0 (0 = plain ReLU)")
    finetune: Literal["full", "hft"] = Field("full", description="train every parameter, or HFT: a re-drawn half of each layer frozen per stage")
    lr: float = Field(1e-4, gt=0.0, le=1.0, description="AdamW peak learning rate (linear warm-up, cosine decay to 10%)")
    warmup_steps: int = Field(10, ge=0, le=100_000, description="learning-rate warm-up steps")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    batch_size: int = Field(1, ge=1, le=256, description="calibration chunks per step (chunk length = calibration.seqlen)")
    grad_clip: float = Field(1.0, gt=0.0, le=1000.0, description="max global gradient norm")
    seed: int = Field(0, ge=0, description="seed of batch order and HFT draws")
    sparsity_eval_tokens: int = Field(4096, ge=64, le=1_048_576, description="wiki test tokens on which per-layer activation sparsity is measured")
    ppl_p: float | None = Field(None, gt=0.0, le=100.0, description="also report CETT-based PPL-p% sparsity (p, e.g. 1); costs ~10 evaluations")
    cett_eval_tokens: int = Field(4096, ge=64, le=1_048_576, description="tokens scored per step of the PPL-p% search")

    @model_validator(mode="after")
    def _schedule_shape(self) -> ProSparseConfig:
        if len(self.lambdas) != len(self.stage_steps):
            raise ValueError(f"lambdas ({len(self.lambdas)}) and stage_steps ({len(self.stage_steps)}) need one entry per stage")
        if any(v < 0 for v in self.lambdas):
            raise ValueError("lambdas must be >= 0")
        if any(n < 1 for n in self.stage_steps):
            raise ValueError("every stage needs at least one step")
        return self
