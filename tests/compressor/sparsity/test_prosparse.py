"""ProSparse, HFT and the CETT / PPL-p% metric on tiny Llamas (seconds each)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from compressor.progress import Progress
from compressor.sparsity.activation import FATReLU, apply_activation_from_config, gate_threshold, set_gate_activation
from compressor.sparsity.hft import (
    ATTENTION,
    FFN,
    NORMS,
    apply_frozen_half,
    draw_frozen_half,
    frozen_counts,
    optimizer_over_trainable,
)
from compressor.sparsity.metrics import LayerSample, activation_sparsity, collect_layer_samples, ppl_p_sparsity, threshold_for_cett
from compressor.sparsity.schedule import lambda_at, sine_ramp, stage_boundaries
from compressor.sparsity.training import finetune
from compressor.spec import ProSparseConfig, Recipe
from tests.random_models import tiny_llama

# --------------------------------------------------------------------------- schedule

LAMBDAS = [0.005, 0.05, 0.05, 0.2]
STEPS = [10, 40, 20, 40]


def test_schedule_warmup_is_flat_and_each_stage_hits_its_peak():
    ends = stage_boundaries(STEPS)
    assert ends == [10, 50, 70, 110]
    assert all(lambda_at(t, LAMBDAS, STEPS) == LAMBDAS[0] for t in range(1, 11))
    for end, peak in zip(ends, LAMBDAS):
        assert lambda_at(end, LAMBDAS, STEPS) == pytest.approx(peak)
    assert lambda_at(500, LAMBDAS, STEPS) == LAMBDAS[-1]  # past the end: the last peak


def test_schedule_is_monotone_within_ramps_and_flat_between_equal_peaks():
    values = [lambda_at(t, LAMBDAS, STEPS) for t in range(1, 111)]
    ramp2, flat3, ramp4 = values[10:50], values[50:70], values[70:110]
    assert all(b > a for a, b in zip(ramp2, ramp2[1:]))  # strictly rising 0.005 -> 0.05
    assert all(v == pytest.approx(0.05) for v in flat3)  # equal peaks: constant
    assert all(b > a for a, b in zip(ramp4, ramp4[1:]))
    # the sine ramp starts and ends flat: first and last increments are small against the middle one
    steps = [b - a for a, b in zip(ramp4, ramp4[1:])]
    assert steps[0] < 0.2 * max(steps) and steps[-1] < 0.2 * max(steps)  # a linear ramp would give 1.0
    # descending peaks are allowed and monotone the other way
    down = [lambda_at(t, [1.0, 0.1], [5, 10]) for t in range(5, 16)]
    assert all(b < a for a, b in zip(down, down[1:]))


def test_sine_ramp_formula():
    for f in (0.0, 0.25, 0.5, 0.9, 1.0):
        assert sine_ramp(f) == pytest.approx(0.5 * (math.sin(-math.pi / 2 + math.pi * f) + 1))
    assert sine_ramp(0.0) == 0.0 and sine_ramp(1.0) == 1.0 and sine_ramp(0.5) == pytest.approx(0.5)


def test_config_refuses_mismatched_schedule():
    with pytest.raises(ValueError, match="one entry per stage"):
        ProSparseConfig(lambdas=[0.0, 0.1], stage_steps=[10])
    with pytest.raises(ValueError):
        Recipe.model_validate({"stages": [{"prosparse": {"lambda": 0.1}}]})  # typo: extra field


# --------------------------------------------------------------------------- activation


def test_relu_swap_gates_only_the_gate_and_up_stays_linear():
    model = tiny_llama()
    set_gate_activation(model, 0.0)
    mlp = model.model.layers[0].mlp
    x = torch.randn(3, 7, 48)
    gate, up = mlp.gate_proj(x), mlp.up_proj(x)
    expected = mlp.down_proj(torch.relu(gate) * up)
    torch.testing.assert_close(mlp(x), expected)
    # up is linear: negative up values survive wherever the gate is positive
    x1 = torch.relu(gate) * up
    assert (x1 < 0).any() and ((gate <= 0) <= (x1 == 0)).all()
    assert model.config.hidden_act == "relu" and gate_threshold(model) == 0.0


def test_fatrelu_zeros_values_at_or_below_threshold():
    act = FATReLU(0.01)
    x = torch.tensor([-1.0, 0.0, 0.005, 0.01, 0.0100001, 0.5])
    assert act(x).tolist() == pytest.approx([0.0, 0.0, 0.0, 0.0, 0.0100001, 0.5])
    x = torch.randn(1000, requires_grad=True)
    act(x).sum().backward()
    assert torch.equal(x.grad, (x > 0.01).float())


def test_threshold_raises_measured_sparsity_and_survives_config_round_trip():
    from transformers import LlamaConfig, LlamaForCausalLM

    model = tiny_llama()
    tokens = torch.randint(0, 256, (2, 32))
    set_gate_activation(model, 0.0)
    relu = sum(activation_sparsity(model, tokens)) / 2
    set_gate_activation(model, 0.05)
    fat = sum(activation_sparsity(model, tokens)) / 2
    assert 0.3 < relu < fat < 1.0
    # what export writes is model.config.to_dict(); a model rebuilt from it runs the same threshold
    cfg = LlamaConfig.from_dict(json.loads(json.dumps(model.config.to_dict())))
    rebuilt = LlamaForCausalLM(cfg).eval()
    rebuilt.load_state_dict(model.state_dict())
    assert type(rebuilt.model.layers[0].mlp.act_fn) is not FATReLU  # stock transformers: plain ReLU
    assert apply_activation_from_config(rebuilt) == 0.05
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(tokens).logits, model(tokens).logits)


# --------------------------------------------------------------------------- HFT


def test_hft_freezes_half_by_category():
    draw = draw_frozen_half(6, seed=3, round_index=0)
    counts = frozen_counts(draw)
    assert all(c["attention"] == 2 and c["norm"] == 1 for c in counts.values())
    assert sorted(c["ffn"] for c in counts.values()) == [1, 1, 1, 2, 2, 2]
    assert all(len(set(paths)) == len(paths) for paths in draw.values())
    assert set().union(*draw.values()) <= set(ATTENTION + FFN + NORMS)


def test_hft_draw_is_seeded_and_redrawn_each_round():
    assert draw_frozen_half(8, 0, 1) == draw_frozen_half(8, 0, 1)
    rounds = [draw_frozen_half(8, 0, r) for r in range(4)]
    assert len({json.dumps(sorted(d.items())) for d in rounds}) == 4
    assert draw_frozen_half(8, 0, 0) != draw_frozen_half(8, 1, 0)


def test_frozen_params_get_no_grad_and_no_optimizer_state():
    model = tiny_llama(num_hidden_layers=4)
    frozen = set(apply_frozen_half(model, draw_frozen_half(4, 0, 0)))
    assert len(frozen) == 4 * (2 + 1) + 2 * 2 + 2 * 1 + 4 * 0  # 2 attn + 1 norm per layer, 2 or 1 FFN
    named = dict(model.named_parameters())
    assert all(not named[n].requires_grad for n in frozen)
    assert named["model.embed_tokens.weight"].requires_grad and named["model.norm.weight"].requires_grad

    def make(params):
        return torch.optim.AdamW(params, lr=1e-3)

    opt = optimizer_over_trainable(model, make)
    tokens = torch.randint(0, 256, (2, 16))
    model(tokens, labels=tokens).loss.backward()
    opt.step()
    for name, p in named.items():
        if name in frozen:
            assert p.grad is None and p not in opt.state
        else:
            assert p.grad is not None and p in opt.state
    # next round: a new half; state of now-frozen params is dropped, of still-trainable ones kept
    frozen2 = set(apply_frozen_half(model, draw_frozen_half(4, 0, 1)))
    opt2 = optimizer_over_trainable(model, make, opt)
    kept = [named[n] for n in named if n not in frozen and n not in frozen2]
    assert kept and all(opt2.state[p] is opt.state[p] for p in kept)
    assert all(named[n] not in opt2.state for n in frozen2)


def test_hft_finetune_step_leaves_frozen_weights_untouched():
    model = tiny_llama(num_hidden_layers=2)
    set_gate_activation(model, 0.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    frozen = set(apply_frozen_half(model, draw_frozen_half(2, 0, 0)))  # the draw finetune's round 0 makes
    for p in model.parameters():
        p.requires_grad_(True)
    cfg = ProSparseConfig(lambdas=[0.5], stage_steps=[3], finetune="hft", lr=1e-2, warmup_steps=0)
    finetune(model, torch.randint(0, 256, (4, 16)), cfg)
    for name, p in model.named_parameters():
        changed = not torch.equal(p, before[name])
        assert changed == (name not in frozen), name
        assert p.requires_grad  # restored after training


# --------------------------------------------------------------------------- training


def test_l1_schedule_raises_sparsity_and_reports_each_step():
    model = tiny_llama(num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4, head_dim=8)
    set_gate_activation(model, 0.0)
    tokens = torch.randint(0, 256, (8, 32), generator=torch.Generator().manual_seed(0))
    events = []
    cfg = ProSparseConfig(lambdas=[0.0, 0.0, 20.0], stage_steps=[5, 5, 30], lr=3e-3, warmup_steps=0, batch_size=4)
    history = finetune(model, tokens, cfg, Progress(events.append))
    steps = [e for e in events if e.kind == "step"]
    assert len(steps) == len(history) == 40
    assert {"loss", "lambda", "sparsity", "lm_loss", "l1"} <= set(steps[0].data)
    assert [e.data["lambda"] for e in steps] == [lambda_at(t, cfg.lambdas, cfg.stage_steps) for t in range(1, 41)]
    assert history[-1]["sparsity"] > history[9]["sparsity"] + 0.2
    assert history[-1]["l1"] < 0.5 * history[9]["l1"]


# --------------------------------------------------------------------------- CETT


def test_cett_threshold_search_hits_target():
    model = tiny_llama(num_hidden_layers=2)
    samples = collect_layer_samples(model, torch.randint(0, 256, (4, 32)))
    for sample in samples:
        for target in (0.05, 0.2, 0.5):
            eps = threshold_for_cett(sample, target, iters=40, rtol=1e-3)
            assert sample.cett(eps) <= target
            assert sample.cett(eps) == pytest.approx(target, rel=0.02)
    # a hand-made layer: two neurons, one tiny; dropping it costs exactly its share of the output
    s = LayerSample(torch.tensor([[1.0, 0.1]]), torch.eye(2))
    assert s.cett(0.05) == 0.0 and s.cett(0.5) == pytest.approx(0.1 / math.hypot(1.0, 0.1))


def rule_tokens(n: int, length: int, seed: int) -> torch.Tensor:
    """Sequences of a fixed arithmetic rule: text a tiny model can learn, so its FFN neurons matter."""
    out = [torch.randint(0, 256, (n, 1), generator=torch.Generator().manual_seed(seed))]
    for _ in range(length - 1):
        out.append((out[-1] * 5 + 3 + out[-1] // 64) % 256)
    return torch.cat(out, 1)


@pytest.fixture(scope="module")
def trained_tiny():
    """A tiny SiLU Llama trained to low perplexity on rule_tokens (a random one predicts uniformly)."""
    torch.manual_seed(0)
    model = tiny_llama()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    data = rule_tokens(64, 32, 0)
    model.train()
    for i in range(60):
        batch = data[(i * 8) % 64 :][:8]
        loss = model(batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_ppl_p_sparsity_on_silu_and_relu_models(trained_tiny):
    import copy

    tokens = rule_tokens(8, 32, 1)
    result = ppl_p_sparsity(trained_tiny, tokens, tokens[:2], p=1.0, iters=8)
    assert 1.0 < result["ppl_ratio"] <= 1.01 and 0 < result["cett"] < 1
    assert 0.0 < result["sparsity"] < 1.0 and len(result["per_layer"]) == 2
    assert all(p["ppl_ratio"] > 1.01 for p in result["probes"] if p["cett"] > result["cett"])
    # a looser p switches off more neurons
    loose = ppl_p_sparsity(trained_tiny, tokens, tokens[:2], p=10.0, iters=8)
    assert loose["sparsity"] > result["sparsity"] and loose["cett"] > result["cett"]
    relu = copy.deepcopy(trained_tiny)
    set_gate_activation(relu, 0.0)
    zeros = sum(activation_sparsity(relu, tokens)) / 2
    assert ppl_p_sparsity(relu, tokens, tokens[:2], p=1.0, iters=8)["sparsity"] > zeros


# --------------------------------------------------------------------------- recipe stage through the pipeline


def test_prosparse_then_quantize_through_pipeline(tiny_store: Path, tmp_path: Path):
    import compressor
    from compressor.pipeline import run
    from compressor.spec import JobSpec

    recipe = {
        "stages": [
            {"prosparse": {"lambdas": [0.0, 1.0], "stage_steps": [2, 3], "finetune": "hft", "sparsity_eval_tokens": 256,
                           "ppl_p": 1.0, "cett_eval_tokens": 256}},
            {"quantize": {"weights": {"bits": 4, "strategy": "group", "group_size": 32, "method": "rtn"}}},
        ],
        "calibration": {"dataset": "wiki", "samples": 4, "seqlen": 32},
        "eval": {"datasets": ["wiki"], "max_tokens": 256, "window": 64, "kl": False},
    }
    events = []
    result = run(JobSpec.model_validate({"model": "tiny-llama", "recipe": recipe}), tmp_path / "out",
                 progress=events.append, home=tiny_store)
    steps = [e for e in events if e.kind == "step" and e.stage == "prosparse"]
    assert len(steps) == 5 and all("sparsity" in e.data and "lambda" in e.data for e in steps)
    section = result.report["sparsity"]
    assert len(section["per_layer"]) == 2 and 0.0 < section["mean"] < 1.0
    assert section["fatrelu_threshold"] == 0.01 and 0.0 < section["ppl_p_sparsity"] <= 1.0
    assert [s["name"] for s in result.report["stages"]][:4] == ["load", "reference:wiki", "0:prosparse", "1:quantize"]
    assert math.isfinite(result.report["perplexity"]["compressed"]["wiki"])

    checkpoint = tmp_path / "out" / "checkpoint"
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["hidden_act"] == "relu" and config["fatrelu_threshold"] == 0.01
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    assert "fatrelu_activation" in manifest["runtime_requirements"]
    loaded = compressor.load(checkpoint, dtype=torch.float32)
    assert gate_threshold(loaded) == 0.01
