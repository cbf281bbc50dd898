"""Every recipe stage implementation, imported once so each registers its handler."""

from compressor.quant import stage as quantize_stage  # noqa: F401  (quantize)
from compressor.transforms import quarot  # noqa: F401  (hadamard)
from compressor.transforms.affinequant import stage as affinequant_stage  # noqa: F401  (affinequant)
from compressor.transforms.ostquant import stage as ostquant_stage  # noqa: F401  (ostquant)
from compressor.transforms.flatquant import stage as flatquant_stage  # noqa: F401  (flatquant)
from compressor.sparsity import stage as prosparse_stage  # noqa: F401  (prosparse)
