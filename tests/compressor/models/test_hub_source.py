"""`hf://` imports through huggingface_hub's own client against a local server that speaks the
hub's protocol (`tests/hub_server.py`): the real hub is not reachable here."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from compressor.models.sources import SourceNotAllowed, SourcePolicy, SourceUnavailable, UnsafeSourceError
from compressor.models.store import ModelStore
from tests.hub_server import COMMIT, HubServer
from tests.model_folders import pickle_folder, sharded_folder


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    server = HubServer({"acme/Tiny-Llama": sharded_folder(tmp_path / "repo"),
                        "acme/pickled": pickle_folder(tmp_path / "pickled")})
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # read once at import, from the environment then
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no user token or cache
    yield server
    server.stop()


def test_hub_repo_is_listed_then_fetched_file_by_file(hub: HubServer, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "home")
    path = store.import_source("hf://acme/Tiny-Llama@main", policy=SourcePolicy.parse("hf://acme"))
    info = json.loads((path / "store.json").read_text())
    repo = hub.repos["acme/Tiny-Llama"]
    assert (info["name"], info["revision"], info["source"]) == ("tiny-llama", COMMIT, "hf://acme/Tiny-Llama@main")
    for f in info["files"]:
        assert f["sha256"] == hashlib.sha256((repo / f["name"]).read_bytes()).hexdigest()
    fetched = {r.split("/")[-1] for r in hub.requests if r.startswith("GET /acme/Tiny-Llama/resolve/")}
    assert fetched == {f["name"] for f in info["files"]}  # neither training_args.bin nor README.md
    assert all(f"/resolve/{COMMIT}/" in r for r in hub.requests if "/resolve/" in r)  # one commit for every file
    assert sorted(p.name for p in store.root.iterdir()) == ["tiny-llama"]


def test_hub_refusals_come_before_any_download(hub: HubServer, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "home")
    with pytest.raises(UnsafeSourceError, match=r"hf://acme/pickled holds pickle weights \(pytorch_model.bin\)"):
        store.import_source("hf://acme/pickled")
    assert not [r for r in hub.requests if "/resolve/" in r]
    with pytest.raises(SourceUnavailable, match="no such repo"):
        store.import_source("hf://acme/missing")
    with pytest.raises(SourceUnavailable, match="no revision 'v9'"):
        store.import_source("hf://acme/Tiny-Llama", revision="v9")
    with pytest.raises(SourceNotAllowed, match="hub organisation acme is not in the allow-list"):
        store.import_source("hf://acme/Tiny-Llama", policy=SourcePolicy.parse("hf://Qwen"))
    assert list(store.root.iterdir()) == []
