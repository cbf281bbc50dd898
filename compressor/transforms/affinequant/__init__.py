"""AffineQuant (ICLR 2024): learned equivalent affine transforms with a gradual mask, trained block by block.

Modules: `mask` (gradual band mask, diagonal-dominance check and repair), `matrices` (the
learnable transforms of a layer, incl. the RoPE-commuting q/k form), `clipping` (learnable
weight clipping), `initialization` (SmoothQuant starting point), `block` (the transformed,
fake-quantized layer forward), `reconstruction` (the block-wise loop), `merge` (float64
fusion and final quantization), `stage` (the `affinequant` recipe stage).
"""
