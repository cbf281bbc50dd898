"""Activation sparsity: ProSparse (Song et al., COLING 2025) and the CETT / PPL-p% metric (Luo et al., 2024).

activation.py      ReLU / FATReLU on the gate output of the gated FFN, and how the exported config carries it
schedule.py        the warm-up + stage-wise sine-ramp schedule of the L1 weight λ (a pure function)
intermediate.py    hooks that see each layer's intermediate activation x₁ = act(gate)·up (L1 penalty, zero counts)
hft.py             Half Fine-Tuning: per layer and per category, a seeded random half of the weights frozen per round
training.py        the fine-tuning loop: LM loss + λ·L1, per-step loss/λ/sparsity through the progress hooks
metrics.py         activation sparsity per layer (exact zeros) and CETT-based PPL-p% sparsity
stage.py           the `prosparse` recipe stage
"""
