"""The checkpoint folder: whole-or-absent units, one state per step series, fingerprint checks, cleanup."""

from __future__ import annotations

import json

import pytest
import torch

from compressor.checkpoints import CheckpointStore, Fingerprint
from compressor.checkpoints.records import optimizer_from_unit, optimizer_to_unit, record_from_unit, record_to_unit
from compressor.checkpoints.store import JOURNAL, UNITS_DIR
from compressor.quant.quantizer import quantize_weight_rtn
from compressor.spec import WeightQuantConfig


def fingerprint(**changes) -> Fingerprint:
    values = {"model": "m", "model_files": {"model.safetensors": "a" * 64}, "recipe_sha256": "b" * 64,
              "calibration_sha256": "c" * 64, "versions": {"torch": "2.13.0"}, "device_kind": "cpu:AVX2"}
    return Fingerprint(**{**values, **changes})


def test_units_survive_a_reopen_and_count_as_reused(tmp_path):
    store = CheckpointStore(tmp_path, fingerprint())
    store.save("s0:layer:00000", {"w": torch.arange(6.0)}, {"note": "x"}, seconds=2.5)
    again = CheckpointStore(tmp_path, fingerprint())
    unit = again.load("s0:layer:00000")
    assert torch.equal(unit.tensors["w"], torch.arange(6.0)) and unit.meta == {"note": "x"}
    assert again.info.attempt == 2 and again.info.units_reused == 1 and again.info.seconds_saved == 2.5


def test_a_file_the_journal_does_not_list_is_dropped(tmp_path):
    """A kill between writing a unit's file and the journal leaves a file nobody trusts."""
    CheckpointStore(tmp_path, fingerprint()).save("s0:layer:00000", {"w": torch.ones(2)})
    stray = tmp_path / UNITS_DIR / "00000000000000000123.safetensors"
    stray.write_bytes(b"half a file")
    store = CheckpointStore(tmp_path, fingerprint())
    assert not stray.exists() and store.keys() == ["s0:layer:00000"]


def test_a_listed_unit_whose_file_is_gone_is_not_offered(tmp_path):
    CheckpointStore(tmp_path, fingerprint()).save("s0:layer:00000", {"w": torch.ones(2)})
    for path in (tmp_path / UNITS_DIR).iterdir():
        path.unlink()
    assert CheckpointStore(tmp_path, fingerprint()).load("s0:layer:00000") is None


def test_a_step_series_keeps_only_its_newest_state(tmp_path):
    store = CheckpointStore(tmp_path, fingerprint())
    for step in (1, 2, 3):
        store.save(f"s0:step:{step:05d}", {"p": torch.full((1000,), float(step))}, {"step": step}, replaces="s0:step:")
    assert store.keys() == ["s0:step:00003"]
    assert len(list((tmp_path / UNITS_DIR).iterdir())) == 1
    key, unit = store.latest("s0:step:")
    assert key == "s0:step:00003" and unit.meta == {"step": 3}
    assert store.info.peak_bytes < 2 * store.bytes_on_disk() + 1  # never more than the replaced state and its successor


def test_a_different_job_starts_fresh_and_says_why(tmp_path):
    CheckpointStore(tmp_path, fingerprint()).save("s0:layer:00000", {"w": torch.ones(2)})
    store = CheckpointStore(tmp_path, fingerprint(recipe_sha256="d" * 64, device_kind="cpu:AVX512"))
    assert store.keys() == [] and not list((tmp_path / UNITS_DIR).iterdir())
    assert store.info.fresh_reason == ("the checkpoint is for a different job: recipe sha256 bbbbbbbbbbbb → dddddddddddd; "
                                       "device cpu:AVX2 → cpu:AVX512")
    assert json.loads((tmp_path / JOURNAL).read_text())["fingerprint"]["device_kind"] == "cpu:AVX512"


def test_clear_removes_everything(tmp_path):
    store = CheckpointStore(tmp_path / "resume", fingerprint())
    store.save("s0:layer:00000", {"w": torch.ones(2)})
    store.clear()
    assert not (tmp_path / "resume").exists()


def test_a_disabled_store_records_nothing(tmp_path):
    store = CheckpointStore(None)
    store.save("s0:layer:00000", {"w": torch.ones(2)})
    assert store.load("s0:layer:00000") is None and not store.step_due("s0:step:", last=True)


def test_quantized_weight_round_trips_bit_exactly(tmp_path):
    torch.manual_seed(0)
    q = quantize_weight_rtn(torch.randn(8, 64), WeightQuantConfig(bits=4, strategy="group", group_size=32))
    tensors, meta = record_to_unit("mlp.up_proj", q)
    store = CheckpointStore(tmp_path, fingerprint())
    store.save("u", tensors, {"q": meta})
    unit = CheckpointStore(tmp_path, fingerprint()).load("u")
    back = record_from_unit("mlp.up_proj", unit.tensors, unit.meta["q"])
    assert type(back) is type(q) and back.group_size == 32 and back.bits == 4
    assert torch.equal(back.codes, q.codes) and torch.equal(back.scale, q.scale) and torch.equal(back.dequantize(), q.dequantize())


def test_optimizer_state_round_trips_so_the_next_step_is_identical(tmp_path):
    torch.manual_seed(0)
    a, b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    opt_a, opt_b = torch.optim.AdamW(a.parameters(), lr=0.1), torch.optim.AdamW(b.parameters(), lr=0.1)
    x = torch.randn(5, 4)
    for _ in range(3):
        opt_a.zero_grad()
        a(x).square().sum().backward()
        opt_a.step()
    b.load_state_dict(a.state_dict())
    CheckpointStore(tmp_path, fingerprint()).save("s0:step:00003", optimizer_to_unit("opt", opt_a))
    optimizer_from_unit("opt", CheckpointStore(tmp_path, fingerprint()).load("s0:step:00003").tensors, opt_b)
    for model, opt in ((a, opt_a), (b, opt_b)):
        opt.zero_grad()
        model(x).square().sum().backward()
        opt.step()
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


@pytest.mark.parametrize("fmt", ["fp8", "nvfp4", "mxfp4"])
def test_float_quantized_weight_round_trips_bit_exactly(tmp_path, fmt):
    """Float formats carry compressed-tensors' QuantizationArgs (a pydantic model) and fp8 scales."""
    from compressor.quant.quantizer import quantize_weight_rtn as quantize

    torch.manual_seed(0)
    cfg = {"fp8": {"bits": 8, "format": "fp8", "strategy": "channel"},
           "nvfp4": {"bits": 4, "format": "nvfp4", "strategy": "group", "group_size": 16},
           "mxfp4": {"bits": 4, "format": "mxfp4", "strategy": "group", "group_size": 32}}[fmt]
    q = quantize(torch.randn(8, 64), WeightQuantConfig(**cfg))
    tensors, meta = record_to_unit("mlp.up_proj", q)
    CheckpointStore(tmp_path, fingerprint()).save("u", tensors, {"q": meta})
    unit = CheckpointStore(tmp_path, fingerprint()).load("u")
    back = record_from_unit("mlp.up_proj", unit.tensors, unit.meta["q"])
    assert type(back) is type(q) and back.args == q.args and back.format == q.format
    assert torch.equal(back.dequantize(), q.dequantize()) and torch.equal(back.scale.float(), q.scale.float())


def test_resume_point_names_the_layer_walk_or_the_steps_after_it(tmp_path):
    """A stage that walks its layers and then trains end to end (OSTQuant's warm start) is past the layers once it has steps."""
    store = CheckpointStore(tmp_path, fingerprint())
    store.save("s0:layer:00000", {"w": torch.ones(2)})
    store.save("s0:layer:00001", {"w": torch.ones(2)})
    assert store.resume_point(["ostquant", "quantize"], 4) == "stage 1/2 ostquant at layer 3 of 4"
    store.save("s0:step:00002", {"w": torch.ones(2)})
    assert store.resume_point(["ostquant", "quantize"], 4) == "stage 1/2 ostquant after step 2"
