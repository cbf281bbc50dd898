"""The job's evaluation: perplexity of the compressed model and of the original, and KL between them.

The original's side is measured before the stages run (`measure_reference`): its NLL per
dataset and, for KL, its final hidden states, with the original head kept when a stage will
rewrite the model's. No second copy of the model is held; both sides go through the same
layer-by-layer forward (`final_hidden_states`), so a model that compresses one layer at a
time is evaluated the same way.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from compressor.context import CompressionContext
from compressor.data import eval_windows, load_text
from compressor.eval.perplexity import WindowScores, score_hidden
from compressor.eval.report import EvalScores
from compressor.eval.resources import CostMeter
from compressor.execution.layer_forward import final_hidden_states
from compressor.spec import QuantizeConfig


@dataclass
class ReferenceSide:
    """The original model on one dataset: its NLL and tokens, and its final hidden states when KL is asked."""

    nll_sum: float
    tokens: int
    hidden: torch.Tensor | None = None


@dataclass
class Reference:
    datasets: dict[str, ReferenceSide] = field(default_factory=dict)
    rewrites_head: bool = False  # a stage will rewrite the model's lm_head (rotations), so KL needs the original's
    head: nn.Module | None = None  # that original head, copied before the stages (resident; sequential reads it from the shards)


@contextmanager
def _reference_head(ctx: CompressionContext, reference: Reference | None) -> Iterator[nn.Module | None]:
    """The head the original's logits come from: None for the model's own, else the original one."""
    if reference is None or not reference.rewrites_head:
        yield None
    elif reference.head is not None:
        yield reference.head
    else:
        with ctx.layers.original("head") as head:
            yield head


def _windows(ctx: CompressionContext, name: str) -> torch.Tensor:
    cfg = ctx.recipe.eval
    return eval_windows(ctx.tokenizer, load_text(name, "eval", ctx.data_dir), cfg.max_tokens, cfg.window).to(ctx.device)


def _hidden(ctx: CompressionContext, name: str, windows: torch.Tensor, what: str) -> torch.Tensor:
    def on_layer(done: int, total: int) -> None:
        ctx.progress.emit("step", f"{name} ({what}): layer {done}/{total}", fraction=done / total)
        ctx.progress.check_cancel()

    return final_hidden_states(ctx.model, ctx.adapter, ctx.layers, windows, on_layer)


def measure_reference(ctx: CompressionContext, meter: CostMeter) -> Reference | None:
    """The original's scores on every eval dataset, before any stage changes the model (None: not asked)."""
    cfg = ctx.recipe.eval
    if not cfg.datasets or not (cfg.original or cfg.kl):
        return None
    rewrites_head = any(not isinstance(c, QuantizeConfig) for c in ctx.recipe.stage_configs())
    keep = rewrites_head and not ctx.layers.sequential
    ref = Reference(rewrites_head=rewrites_head, head=copy.deepcopy(ctx.adapter.lm_head(ctx.model)) if keep else None)
    for name in cfg.datasets:
        ctx.progress.stage = f"reference:{name}"
        saved = ctx.checkpoints.load(f"reference:{name}")
        if saved is not None:
            ref.datasets[name] = ReferenceSide(saved.meta["nll_sum"], saved.meta["tokens"], saved.tensors.get("hidden"))
            continue
        with meter.measure(f"reference:{name}") as cost:
            windows = _windows(ctx, name)
            hidden = _hidden(ctx, name, windows, "original")
            with ctx.layers.outer("head"):
                scores = score_hidden(hidden, windows, lambda h: ctx.adapter.logits(ctx.model, h))
        side = ReferenceSide(scores.nll_sum, scores.tokens, hidden if cfg.kl else None)
        ctx.checkpoints.save(f"reference:{name}", {"hidden": hidden} if cfg.kl else {},
                             {"nll_sum": side.nll_sum, "tokens": side.tokens}, seconds=cost.seconds)
        ref.datasets[name] = side
    return ref


def evaluate(ctx: CompressionContext, reference: Reference | None, meter: CostMeter) -> EvalScores:
    """Score every dataset of `recipe.eval`, emitting progress per layer and window and honouring cancel."""
    cfg = ctx.recipe.eval
    scores_out = EvalScores(perplexity={"original": {}, "compressed": {}})
    for name in cfg.datasets:
        ctx.progress.stage = f"eval:{name}"
        side = reference.datasets[name] if reference is not None else None
        saved = ctx.checkpoints.load(f"eval:{name}")
        if saved is not None:  # a previous attempt scored this dataset on the same bits
            scores = WindowScores(**saved.meta)
            _record(scores_out, name, scores, side is not None, cfg.kl)
            continue

        def on_window(done: int, total: int) -> None:
            ctx.progress.emit("step", f"{name}: {done}/{total} windows", fraction=done / total)
            ctx.progress.check_cancel()

        with meter.measure(f"eval:{name}") as cost:
            windows = _windows(ctx, name)
            hidden = _hidden(ctx, name, windows, "compressed")
            with ctx.layers.outer("head"), _reference_head(ctx, reference) as head:
                scores = score_hidden(
                    hidden, windows, lambda h: ctx.adapter.logits(ctx.model, h),
                    reference_hidden=side.hidden if side is not None else None,
                    reference_logits=lambda h: ctx.adapter.logits(ctx.model, h, head=head),
                    on_window=on_window,
                )
        if side is not None:
            scores.ref_nll_sum = side.nll_sum
        ctx.checkpoints.save(f"eval:{name}", {}, dataclasses.asdict(scores), seconds=cost.seconds)
        _record(scores_out, name, scores, side is not None, cfg.kl)
        ctx.progress.emit("metric", f"{name} perplexity {scores.perplexity:.3f}", data={"dataset": name, "perplexity": scores.perplexity})
    if not scores_out.perplexity["original"]:
        del scores_out.perplexity["original"]
    return scores_out


def _record(out: EvalScores, name: str, scores: WindowScores, with_reference: bool, kl: bool) -> None:
    out.perplexity["compressed"][name] = scores.perplexity
    if with_reference:
        out.perplexity["original"][name] = scores.reference_perplexity
        if kl:
            out.kl[name] = scores.kl
    out.eval_tokens[name] = scores.tokens

