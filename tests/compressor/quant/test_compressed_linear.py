"""`install_quantized_weight`: the one state every weight-quantizing method leaves for export."""

import torch

from compressor.models.adapter import adapter_for
from compressor.quant.compressed_linear import FakeQuantLinear, install_quantized_weight, plain_linear
from compressor.quant.quantizer import quantize_weight_rtn
from compressor.spec import WeightQuantConfig
from tests.random_models import tiny_llama


def test_install_puts_dequantized_weight_and_codes_in_place():
    model = tiny_llama()
    parts = adapter_for(model).all_layer_parts(model)[1]
    original = plain_linear(parts.layer.mlp.up_proj).weight.detach().clone()
    q = quantize_weight_rtn(original, WeightQuantConfig(bits=3, strategy="group", group_size=16))
    record = install_quantized_weight(parts, "mlp.up_proj", q)
    wrapped = parts.layer.mlp.up_proj
    assert isinstance(wrapped, FakeQuantLinear) and wrapped.quantized_weight is q
    torch.testing.assert_close(wrapped.weight, q.dequantize().to(original.dtype))
    expected = (torch.linalg.norm(q.dequantize() - original) / torch.linalg.norm(original)).item()
    assert record == {"name": "model.layers.1.mlp.up_proj", "layer": 1, "kind": "up_proj", "rel_error": expected}
    assert 0 < record["rel_error"] < 0.5
