"""Model sources: parsing, the REST allow-list, the safety rules, and folders streamed into the store.

Folders are built in the test (a tiny random Llama in bf16, sharded with and without an index,
plus a tokenizer); S3 runs against moto's server; the hub only where it must fail offline
(a fake hub serving the real protocol is in test_hub_source.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from pathlib import Path

import pytest

from compressor.models.sources import (
    HubSource, LocalSource, S3Source, SourceError, SourceNotAllowed, SourcePolicy, SourceTooLarge, SourceUnavailable,
    UnknownSchemeError, UnsafeSourceError, UnsupportedModelError, default_name, parse_source,
)
from compressor.models.store import ModelExistsError, ModelStore
from compressor.progress import JobCancelled
from tests.model_folders import pickle_folder, reference_model, sharded_folder, with_auto_map


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- parsing


def test_parse_sources() -> None:
    assert parse_source("/data/m") == LocalSource(Path("/data/m"))
    assert parse_source("file:///data/m.gguf").is_gguf
    assert parse_source("hf://Qwen/Qwen2.5-1.5B@v1") == HubSource("Qwen/Qwen2.5-1.5B", "v1")
    assert parse_source("hf://Qwen/Qwen2.5-1.5B@v1", revision="main").revision == "main"
    s3 = parse_source("s3://bucket/llm/qwen/?endpoint_url=http://minio:9000&region=eu-west-1")
    assert s3 == S3Source("bucket", "llm/qwen", "http://minio:9000", "eu-west-1")
    assert [default_name(parse_source(t)) for t in ("/x/Qwen2.5-1.5B", "hf://meta-llama/Llama-3.1-8B", "s3://b/a/Mistral_7B",
                                                     "/g/SmolLM2.Q4_1.gguf")] == [
        "qwen2.5-1.5b", "llama-3.1-8b", "mistral_7b", "smollm2.q4_1"]
    with pytest.raises(UnknownSchemeError, match=r"unknown source scheme gs://; allowed: a local path, file://, hf://, s3://"):
        parse_source("gs://bucket/model")
    for bad, says in [("hf://no-org", "org/model"), ("hf://a/../b", "org/model"), ("s3://b/x/../y", "'..'"),
                      ("s3://b/x?endpoint=1", "unknown S3 URL option"), ("s3://k:s@b/x", "no credentials"), ("", "empty")]:
        with pytest.raises(SourceError, match=says):
            parse_source(bad)
    with pytest.raises(SourceError, match="hf:// sources only"):
        parse_source("/data/m", revision="main")


# --------------------------------------------------------------------------- the allow-list


def test_policy_admits_only_its_roots_orgs_and_buckets(tmp_path: Path) -> None:
    root = tmp_path / "allowed"
    (root / "team" / "m").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (root / "escape").symlink_to(tmp_path / "secret")
    policy = SourcePolicy.parse(f"{root}, hf://Qwen, s3://models/llm?endpoint_url=http://minio:9000&region=eu-west-1")
    allowed = f"local folders under {root}; hub organisations hf://Qwen; buckets s3://models/llm (COMPRESSOR_MODEL_SOURCES)"
    assert policy.describe() == allowed

    assert policy.admit(parse_source(str(root / "team" / "m"))) == LocalSource(root / "team" / "m")
    assert policy.admit(parse_source("hf://qwen/Qwen2.5-1.5B")).repo_id == "qwen/Qwen2.5-1.5B"
    assert policy.admit(parse_source("s3://models/llm/qwen")) == S3Source("models", "llm/qwen", "http://minio:9000", "eu-west-1")
    refused = {
        str(tmp_path / "secret"): "outside the allowed local roots",
        f"{root}/team/../../secret": "may not contain '..'",
        str(root / "escape"): "a symlink leaves the root",
        "hf://meta-llama/Llama-3.1-8B": "hub organisation meta-llama is not in the allow-list",
        "s3://models/llm2/x": "bucket and prefix are not in the allow-list",
        "s3://other/llm/x": "bucket and prefix are not in the allow-list",
        "s3://models/llm/x?endpoint_url=http://evil:80": "takes no endpoint_url",
    }
    for text, why in refused.items():
        with pytest.raises(SourceNotAllowed) as err:
            policy.admit(parse_source(text))
        assert why in str(err.value) and str(err.value).endswith(f"allowed: {allowed}"), text
    with pytest.raises(SourceNotAllowed, match=r"allowed: none \(the operator sets COMPRESSOR_MODEL_SOURCES\)"):
        SourcePolicy().admit(parse_source(str(root)))
    for bad in ("relative/path", "hf://org/model", "ftp://x"):
        with pytest.raises(ValueError, match="model source"):
            SourcePolicy.parse(bad)


def test_a_symlinked_file_leaving_the_root_is_refused_before_copying(tmp_path: Path) -> None:
    root = tmp_path / "allowed"
    folder = sharded_folder(root / "m")
    outside = tmp_path / "tokenizer.json"
    (folder / "tokenizer.json").rename(outside)
    (folder / "tokenizer.json").symlink_to(outside)
    store = ModelStore(tmp_path / "home")
    with pytest.raises(SourceNotAllowed, match=f"tokenizer.json is a symlink to {outside}, outside the allowed root"):
        store.import_source(str(folder), "m", policy=SourcePolicy.parse(str(root)))
    assert store.names() == [] and list(store.root.iterdir()) == []
    store.import_source(str(folder), "m")  # the CLI (no policy) follows the user's own links
    assert store.names() == ["m"]


# --------------------------------------------------------------------------- folders


@pytest.mark.parametrize("index", [True, False], ids=["with-index", "without-index"])
def test_sharded_folder_is_streamed_in_hashed_and_loads_with_equal_logits(tmp_path: Path, index: bool) -> None:
    import torch

    folder = sharded_folder(tmp_path / "src", shards=3, index=index)
    shards = sorted(p.name for p in folder.glob("*.safetensors"))
    assert len(shards) >= 3
    store = ModelStore(tmp_path / "home")
    events = []
    path = store.import_source(str(folder), "tiny", progress=events.append)
    info = json.loads((path / "store.json").read_text())

    files = {f["name"]: f for f in info["files"]}
    for shard in shards:  # copied, not re-saved: the same bytes
        assert files[shard]["sha256"] == _sha(folder / shard) == _sha(path / shard)
        assert files[shard]["size"] == (folder / shard).stat().st_size
    assert {"config.json", "tokenizer.json", "model.safetensors.index.json"} <= set(files)
    assert not {"training_args.bin", "README.md"} & set(os.listdir(path))  # pickle and card not taken
    if index:
        assert files["model.safetensors.index.json"]["sha256"] == _sha(folder / "model.safetensors.index.json")
    original = reference_model().float()
    assert info["params"] == sum(p.numel() for p in original.parameters())
    assert (info["architecture"], info["dtype"], info["num_layers"], info["hidden_size"]) == (
        "LlamaForCausalLM", "bfloat16", 3, 48)
    assert info["source"] == str(folder) and store.names() == ["tiny"]
    assert any(e.kind == "step" and e.fraction == 1.0 for e in events)

    model, _tok = store.load("tiny")
    loaded, expected = model.state_dict(), original.state_dict()
    assert set(loaded) == set(expected) and all(torch.equal(loaded[k], expected[k]) for k in expected)
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # same weights; the attention kernel each picks may round differently
        torch.testing.assert_close(model(ids).logits, original(ids).logits, rtol=1e-4, atol=1e-5)
    with pytest.raises(ModelExistsError, match="already holds a model 'tiny'"):
        store.import_source(str(folder), "tiny")


def test_one_shard_with_another_name_becomes_model_safetensors(tmp_path: Path) -> None:
    folder = sharded_folder(tmp_path / "src", shards=1)
    (folder / "model.safetensors").rename(folder / "consolidated.safetensors")
    path = ModelStore(tmp_path / "home").import_source(str(folder), "one")
    info = json.loads((path / "store.json").read_text())
    assert [f["name"] for f in info["files"] if f["name"].endswith(".safetensors")] == ["model.safetensors"]
    assert info["files"][[f["name"] for f in info["files"]].index("model.safetensors")]["sha256"] == _sha(
        folder / "consolidated.safetensors")


def test_hard_link_shares_the_inode(tmp_path: Path) -> None:
    folder = sharded_folder(tmp_path / "src", shards=2)
    path = ModelStore(tmp_path / "home").import_source(str(folder), "linked", link=True)
    shard = next(folder.glob("model-*.safetensors"))
    assert (path / shard.name).stat().st_ino == shard.stat().st_ino


def test_pickle_checkpoint_is_refused_with_how_to_convert(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "home")
    with pytest.raises(UnsafeSourceError) as err:
        store.import_source(str(pickle_folder(tmp_path / "pkl")), "pkl")
    message = str(err.value)
    assert "holds pickle weights (pytorch_model.bin) and no *.safetensors" in message
    assert "unpickling can run arbitrary code" in message and ".save_pretrained('OUT')" in message
    assert store.names() == []


def test_custom_code_unsupported_families_and_size_limit_are_refused(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "home")
    with pytest.raises(UnsafeSourceError, match="auto_map .*AutoModelForCausalLM.* never runs remote code"):
        store.import_source(str(with_auto_map(sharded_folder(tmp_path / "code"))), "code")
    moe = sharded_folder(tmp_path / "moe")
    config = json.loads((moe / "config.json").read_text())
    (moe / "config.json").write_text(json.dumps({**config, "architectures": ["MixtralForCausalLM"], "num_local_experts": 8}))
    with pytest.raises(UnsupportedModelError, match="mixture-of-experts"):
        store.import_source(str(moe), "moe")
    folder = sharded_folder(tmp_path / "big")
    weights = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    with pytest.raises(SourceTooLarge, match="over the limit"):
        store.import_source(str(folder), "big", max_bytes=weights - 1)
    store.import_source(str(folder), "big", max_bytes=weights)
    (tmp_path / "notok").mkdir()
    (tmp_path / "notok" / "config.json").write_text("{}")
    (tmp_path / "notok" / "model.safetensors").write_bytes(b"")
    with pytest.raises(UnsafeSourceError, match="no tokenizer"):
        store.import_source(str(tmp_path / "notok"), "notok")
    assert store.names() == ["big"] and sorted(os.listdir(store.root)) == ["big"]


def test_truncated_or_mismatched_shards_are_refused(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "home")
    folder = sharded_folder(tmp_path / "cut")
    shard = sorted(folder.glob("model-*.safetensors"))[-1]
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(UnsafeSourceError, match=f"{shard.name}: tensor .* do not fit .* \\(truncated\\?\\)"):
        store.import_source(str(folder), "cut")
    folder = sharded_folder(tmp_path / "idx")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = sorted(set(index["weight_map"].values()))[-1]
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(UnsafeSourceError, match=f"does not match the shards: 1 tensors not where it says \\(e.g. {first}\\)"):
        store.import_source(str(folder), "idx")
    folder = sharded_folder(tmp_path / "fake")
    (folder / "model-00001-of-00004.safetensors").write_bytes(b"\x80\x04pickle, not safetensors")
    with pytest.raises(UnsafeSourceError, match="is not a safetensors file"):
        store.import_source(str(folder), "fake")
    assert store.names() == [] and list(store.root.iterdir()) == []


def test_cancel_leaves_nothing_behind(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "home")
    with pytest.raises(JobCancelled):
        store.import_source(str(sharded_folder(tmp_path / "src")), "tiny", should_cancel=lambda: True)
    assert list(store.root.iterdir()) == []


# --------------------------------------------------------------------------- S3


def test_s3_prefix_is_imported_with_the_same_bytes(tmp_path: Path, s3_endpoint: str) -> None:
    import boto3

    folder = sharded_folder(tmp_path / "src")
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="team-models")
    for p in folder.iterdir():
        client.upload_file(str(p), "team-models", f"llm/tiny/{p.name}")
    client.put_object(Bucket="team-models", Key="llm/tiny/original/consolidated.pth", Body=b"pickle in a subfolder")
    store = ModelStore(tmp_path / "home")
    with pytest.raises(SourceUnavailable, match="no objects under this prefix"):
        store.import_source(f"s3://team-models/llm/nothing?endpoint_url={s3_endpoint}&region=us-east-1", "x")
    policy = SourcePolicy.parse(f"s3://team-models/llm?endpoint_url={s3_endpoint}&region=us-east-1")
    path = store.import_source("s3://team-models/llm/tiny", policy=policy)  # the endpoint comes from the policy
    info = json.loads((path / "store.json").read_text())
    assert info["name"] == "tiny" and info["source"] == "s3://team-models/llm/tiny"
    for f in info["files"]:
        assert f["sha256"] == _sha(folder / f["name"]) == _sha(path / f["name"])
    assert "original" not in os.listdir(path)


# --------------------------------------------------------------------------- the hub, offline


def test_hub_offline_fails_at_once_with_a_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ModelStore(tmp_path / "home")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SourceUnavailable, match=r"cannot import hf://Qwen/Qwen2.5-1.5B from the hub .*HF_HUB_OFFLINE is set "
                                                r"\(offline mode\).*import its folder"):
        store.import_source("hf://Qwen/Qwen2.5-1.5B")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(SourceUnavailable, match=f"no connection to 127.0.0.1:{port} within 5 s"):
        store.import_source("hf://Qwen/Qwen2.5-1.5B@main")
    assert time.monotonic() - started < 60  # a guard against hanging on retries, not a speed check
    assert list(store.root.iterdir()) == []
