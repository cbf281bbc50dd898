"""OSTQuant's student forward with activation checkpointing: the same gradients, a fraction of the saved tensors."""

from __future__ import annotations

import copy

import torch

from compressor.models.adapter import adapter_for
from compressor.transforms.fusion import fold_norms_into_linears
from compressor.transforms.ostquant.effective import effective_layer_weights
from compressor.transforms.ostquant.parameters import OSTParameters
from compressor.transforms.ostquant.stage import run_ostquant
from compressor.transforms.ostquant.student import transformed_layers
from tests.compressor.transforms.test_ostquant import perturbed_parameters, tiny_context
from tests.random_models import tiny_llama


def _student_step(model, adapter, params: OSTParameters, tokens: torch.Tensor, checkpointed: bool):
    """One student forward + backward: (loss, bytes autograd saved outside checkpointed regions, grads)."""
    for p in params.parameters():
        p.grad = None
    r1 = params.r1.float()
    saved = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[0] += t.numel() * t.element_size()
        return t

    def weights(parts):
        return effective_layer_weights(parts, adapter, params, torch.float32, r1, None)

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with transformed_layers(adapter.all_layer_parts(model), weights, checkpointed):
            hidden = model.model(inputs_embeds=model.model.embed_tokens.weight[tokens] @ r1, use_cache=False)[0]
        loss = (hidden @ r1.T @ model.lm_head.weight.T).logsumexp(-1).mean()
    loss.backward()
    return loss.item(), saved[0], [p.grad.clone() for p in params.parameters()]


def test_checkpointed_layers_give_the_same_gradients_and_keep_only_layer_inputs():
    model = tiny_llama(num_hidden_layers=4)
    adapter = adapter_for(model)
    adapter.untie_embeddings(model)
    fold_norms_into_linears(model, adapter)
    for p in model.parameters():
        p.requires_grad_(False)
    params = perturbed_parameters(model, adapter)
    for p in params.parameters():
        p.requires_grad_(True)
    tokens = torch.randint(0, 256, (2, 64), generator=torch.Generator().manual_seed(0))
    plain = _student_step(model, adapter, params, tokens, checkpointed=False)
    checkpointed = _student_step(model, adapter, params, tokens, checkpointed=True)
    assert checkpointed[0] == plain[0]
    for a, b in zip(plain[2], checkpointed[2]):  # recomputation runs the same ops on the same values
        assert ((a - b).abs().max() / a.abs().max()).item() <= 1e-6
    # 4 layers: the plain graph keeps every layer's intermediates and transformed weights
    assert checkpointed[1] * 8 < plain[1], (checkpointed[1], plain[1])
    assert all("forward" not in parts.layer.__dict__ for parts in adapter.all_layer_parts(model))  # patch removed
    with torch.no_grad():  # and the model runs its own weights again
        out = model(tokens).logits
    assert torch.isfinite(out).all()


def test_training_with_and_without_checkpointing_takes_the_same_steps():
    model = tiny_llama(num_hidden_layers=2, vocab_size=256)
    adapter_for(model).untie_embeddings(model)
    cal = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(1))
    runs = {}
    for checkpointing in (False, True):
        m = copy.deepcopy(model)
        stages = [{"ostquant": {"steps": 3, "batch_size": 2, "k": 32, "qsur_samples": 0,
                                "activation_checkpointing": checkpointing}},
                  {"quantize": {"weights": {"bits": 4, "strategy": "channel"}}}]
        ctx = tiny_context(m, stages, cal)
        run_ostquant(ctx, ctx.recipe.stage_configs()[0])
        runs[checkpointing] = (ctx.report_sections["training"]["ostquant_loss"], m.state_dict())
    (loss_a, state_a), (loss_b, state_b) = runs[False], runs[True]
    assert len(loss_a) == 3
    for a, b in zip(loss_a, loss_b):
        assert abs(a - b) <= 1e-6 * abs(a)
    for k in state_a:
        assert torch.allclose(state_a[k], state_b[k], rtol=1e-5, atol=1e-7), k
