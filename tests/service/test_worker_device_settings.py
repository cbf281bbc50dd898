"""The worker's COMPRESSOR_DEVICE and COMPRESSOR_WORKER_MEMORY settings: parsed, or refused naming the entry."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.settings import Settings, parse_worker_memory


def test_worker_memory_parses_kinds_and_units():
    assert parse_worker_memory("") == {}
    assert parse_worker_memory("cpu=24GiB") == {"cpu": 24 * 2**30}
    assert parse_worker_memory("cuda=141GiB, cpu=64GB") == {"cuda": 141 * 2**30, "cpu": 64 * 10**9}
    assert parse_worker_memory("cpu=512MiB") == {"cpu": 512 * 2**20}
    assert parse_worker_memory("cpu=1.5GiB") == {"cpu": 3 * 2**29}


@pytest.mark.parametrize("text", ["gpu=80GiB", "cpu", "cpu=lots", "cpu=24 parsecs", "cuda=80GiB,cuda=40GiB"])
def test_bad_worker_memory_is_refused_naming_the_setting(text):
    with pytest.raises(ValidationError, match="COMPRESSOR_WORKER_MEMORY"):
        Settings(worker_memory=text)


def test_device_setting_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("COMPRESSOR_DEVICE", "CUDA:1")
    monkeypatch.setenv("COMPRESSOR_WORKER_MEMORY", "cuda=141GiB,cpu=64GiB")
    s = Settings(home=tmp_path)
    assert s.device == "cuda:1"
    assert s.worker_memory_bytes == {"cuda": 141 * 2**30, "cpu": 64 * 2**30}
    assert Settings(home=tmp_path, device="").device == "auto"
    monkeypatch.setenv("COMPRESSOR_DEVICE", "gpu0")
    with pytest.raises(ValidationError, match=r"COMPRESSOR_DEVICE='gpu0' is not a device; allowed: auto, cpu, cuda, cuda:N"):
        Settings(home=tmp_path)
