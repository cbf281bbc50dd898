"""Per-linear output error of GPTQ vs RTN on the real model's calibration inputs (layers 0 and 5).

A diagnostic for the model-level GPTQ-vs-RTN gap: writes bench/results/gptq_layer_error.json.

    COMPRESSOR_HOME=.cache/test-home .venv/bin/python bench/gptq_layer_error.py
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from compressor.data import calibration_chunks, load_text
from compressor.models.adapter import adapter_for
from compressor.models.store import ModelStore
from compressor.execution.layer_inputs import capture_layer0_inputs, layer_outputs
from compressor.quant.calibration import capture_linear_inputs
from compressor.quant.gptq import HessianAccumulator, gptq_quantize
from compressor.quant.quantizer import quantize_weight_rtn
from compressor.spec import WeightQuantConfig


def main() -> None:
    model, tok = ModelStore().load("smollm2-135m")
    adapter = adapter_for(model)
    tokens = calibration_chunks(tok, load_text("wiki", "calibration"), 16, 512)
    inputs = capture_layer0_inputs(model, adapter, tokens)
    cfg = WeightQuantConfig(bits=4, strategy="group", group_size=64, method="gptq")
    rows = []
    for index in range(6):
        parts = adapter.layer_parts(model, index)
        linears = parts.linears()
        seen: dict[str, list[torch.Tensor]] = {n: [] for n in linears}
        with capture_linear_inputs(linears, lambda n, x: seen[n].append(x)):
            out = layer_outputs(parts.layer, inputs)
        if index in (0, 5):
            for name, lin in linears.items():
                x = torch.cat(seen[name]).reshape(-1, lin.in_features).double()
                acc = HessianAccumulator(lin.in_features)
                acc.add(x)
                w = lin.weight.data
                err = lambda q: ((x @ (q.double() - w.double()).T) ** 2).mean().item()  # noqa: E731
                rows.append({"layer": index, "linear": name,
                             "gptq": err(gptq_quantize(w, acc.hessian, cfg).dequantize()),
                             "rtn": err(quantize_weight_rtn(w, cfg).dequantize())})
                print(json.dumps(rows[-1]), flush=True)
        inputs.hidden = out
    path = Path(__file__).resolve().parent / "results" / "gptq_layer_error.json"
    path.write_text(json.dumps({"command": "python bench/gptq_layer_error.py", "config": cfg.model_dump(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
