"""KL-Top: the KL divergence of a student's logits from a teacher's, on the teacher's top-k tokens.

The calibration objective of OSTQuant (also offered by AffineQuant here). The long tail of a
50k-word vocabulary is mostly noise on a small calibration set; keeping only the k entries the
teacher finds likeliest keeps the signal and drops that noise. As in OSTQuant's trainer with
`post_attn=True`: p and log q are full-vocabulary (log-)softmaxes, restricted afterwards to the
teacher's top-k indices of each token, without renormalisation; the sum over those entries is
averaged over tokens. `renormalize=True` is the `post_attn=False` variant: both logit vectors
are first cut to the top-k entries and softmaxed over those k only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kl_top_loss(teacher_logits: torch.Tensor, student_logits: torch.Tensor, k: int = 1000, renormalize: bool = False) -> torch.Tensor:
    """Σ_{i ∈ top-k(teacher)} p_i (log p_i − log q_i), averaged over all tokens ([..., vocab] inputs)."""
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(f"teacher logits {tuple(teacher_logits.shape)} and student logits {tuple(student_logits.shape)} differ")
    teacher = teacher_logits.detach().float().reshape(-1, teacher_logits.shape[-1])
    student = student_logits.float().reshape(-1, student_logits.shape[-1])
    top = teacher.topk(min(k, teacher.shape[-1]), dim=-1).indices
    if renormalize:
        log_p = F.log_softmax(teacher.gather(-1, top), dim=-1)
        log_q = F.log_softmax(student.gather(-1, top), dim=-1)
    else:
        log_p = F.log_softmax(teacher, dim=-1).gather(-1, top)
        log_q = F.log_softmax(student, dim=-1).gather(-1, top)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1).mean()
