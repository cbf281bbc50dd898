"""Integer quantizers, fake-quant modules, and the weight quantization methods (RTN, GPTQ)."""
