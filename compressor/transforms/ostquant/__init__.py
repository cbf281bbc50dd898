"""OSTQuant (Hu et al., ICLR 2025): learnable orthogonal + scaling equivalent transforms trained with KL-Top.

parameters.py  the learnable rotations and log-scales, and their initialization
effective.py   base weights + transforms → the transformed weights (training and float64 fusion)
stiefel.py     Cayley-Adam, a Riemannian optimizer that keeps rotations exactly orthogonal
training.py    the end-to-end calibration loop against the model's own unquantized teacher
stage.py       the `ostquant` recipe stage: fold norms, train, fuse, QSUR table
"""
