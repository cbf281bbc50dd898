"""FlatQuant-style layer-wise learned transforms: Kronecker transforms, scales and clipping per linear input.

Modules: `transforms` (one input's learnable (x ⊙ c)(L ⊗ R) and its condition guard), `block`
(a decoder layer run through its transforms, differentiable), `reconstruction` (the layer by
layer training loop, fusion and resume), `stage` (the recipe stage).
"""
