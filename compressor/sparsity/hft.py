"""HFT, Half Fine-Tuning (Hui et al., ACL 2025): freeze a random half of each layer, by category, per round.

In every decoder layer: 2 of the 4 attention matrices, 2 of the 3 FFN matrices in a random
half of the layers and 1 of 3 in the others, and 1 of the 2 norms are frozen; embeddings,
the final norm and the head stay trainable (freezing them hurt in the paper). A new half is
drawn for each round (here: each ProSparse stage), from (seed, round), so runs repeat.

Frozen parameters get `requires_grad = False`: autograd skips their weight-gradient GEMMs
and the optimizer is rebuilt over the trainable ones only, which is where the time goes.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

import torch
from torch import nn

from compressor.models.adapter import adapter_for

ATTENTION = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
FFN = ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
NORMS = ("input_layernorm", "post_attention_layernorm")
CATEGORIES = {"attention": ATTENTION, "ffn": FFN, "norm": NORMS}

FrozenHalf = dict[int, tuple[str, ...]]  # layer index -> module paths (relative to the layer) frozen


def draw_frozen_half(num_layers: int, seed: int, round_index: int) -> FrozenHalf:
    """The modules each layer freezes in this round; the same (seed, round) always gives the same draw."""
    rng = random.Random(f"hft:{seed}:{round_index}")  # str seeds hash with SHA-512: stable across processes
    two_ffn = set(rng.sample(range(num_layers), num_layers // 2))
    draw: FrozenHalf = {}
    for i in range(num_layers):
        ffn_frozen = 2 if i in two_ffn else 1
        draw[i] = tuple(rng.sample(ATTENTION, 2) + rng.sample(FFN, ffn_frozen) + rng.sample(NORMS, 1))
    return draw


def apply_frozen_half(model: nn.Module, draw: FrozenHalf) -> list[str]:
    """Make every parameter trainable except those of the drawn modules; returns the frozen parameter names."""
    adapter_for(model).all_layer_parts(model)  # Phi-3: split qkv_proj / gate_up_proj, so each role can be frozen alone
    for p in model.parameters():
        p.requires_grad_(True)
    frozen = []
    for layer_index, paths in draw.items():
        layer = model.model.layers[layer_index]
        for path in paths:
            for name, p in layer.get_submodule(path).named_parameters():
                p.requires_grad_(False)
                frozen.append(f"model.layers.{layer_index}.{path}.{name}")
    return frozen


def frozen_counts(draw: FrozenHalf) -> dict[int, dict[str, int]]:
    """Per layer, how many modules of each category the draw freezes."""
    return {i: {cat: sum(p in members for p in paths) for cat, members in CATEGORIES.items()} for i, paths in draw.items()}


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def optimizer_over_trainable(
    model: nn.Module, make: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer], previous: torch.optim.Optimizer | None = None
) -> torch.optim.Optimizer:
    """A fresh optimizer over the trainable parameters, carrying over the state (Adam moments) of those still trainable.

    State of parameters frozen this round is dropped, so the frozen half costs no optimizer memory or time.
    """
    params = trainable_parameters(model)
    optimizer = make(params)
    if previous is not None:
        for p in params:
            if p in previous.state:
                optimizer.state[p] = previous.state[p]
    return optimizer
