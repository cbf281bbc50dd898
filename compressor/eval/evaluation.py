"""The job's evaluation: perplexity of the compressed model (and the original) and KL between them."""

from __future__ import annotations

import dataclasses

import torch

from compressor.context import CompressionContext
from compressor.data import eval_windows, load_text
from compressor.eval.perplexity import WindowScores, score_windows
from compressor.eval.report import EvalScores
from compressor.eval.resources import CostMeter


def evaluate(ctx: CompressionContext, reference: torch.nn.Module | None, meter: CostMeter) -> EvalScores:
    """Score every dataset of `recipe.eval`, emitting progress per batch and honouring cancel."""
    cfg = ctx.recipe.eval
    scores_out = EvalScores(perplexity={"original": {}, "compressed": {}})
    for name in cfg.datasets:
        ctx.progress.stage = f"eval:{name}"
        saved = ctx.checkpoints.load(f"eval:{name}")
        if saved is not None:  # a previous attempt scored this dataset on the same bits
            scores = WindowScores(**saved.meta)
            _record(scores_out, name, scores, reference is not None, cfg.kl)
            continue
        windows = eval_windows(ctx.tokenizer, load_text(name, "eval", ctx.data_dir), cfg.max_tokens, cfg.window)

        def on_batch(done: int, total: int) -> None:
            ctx.progress.emit("step", f"{name}: {done}/{total} windows", fraction=done / total)
            ctx.progress.check_cancel()

        with meter.measure(f"eval:{name}") as cost:
            scores = score_windows(ctx.model, windows, reference=reference, on_batch=on_batch)
        ctx.checkpoints.save(f"eval:{name}", {}, dataclasses.asdict(scores), seconds=cost.seconds)
        _record(scores_out, name, scores, reference is not None, cfg.kl)
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
