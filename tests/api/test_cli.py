"""The service commands of the CLI against a running `compressor serve` (dry-run runner)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.service_setup import fake_store_entry
from tests.servers import Server, cli, service_env


def test_keys_submit_status_wait_download_cancel(tmp_path: Path) -> None:
    home = tmp_path / "home"
    fake_store_entry(home)
    env = service_env(tmp_path, home, COMPRESSOR_JOB_RUNNER="dry-run", COMPRESSOR_DRY_RUN_LAYER_S="0.1")
    created = cli(env, "keys", "create", "--name", "ci")
    assert created.returncode == 0 and created.stdout.startswith("cmp_") and "shown once" in created.stderr
    key = created.stdout.strip()
    listed = cli(env, "keys", "list")
    assert "\tci\tactive" in listed.stdout and key not in listed.stdout
    server = Server(env, tmp_path / "serve.log")
    try:
        client = {**env, "COMPRESSOR_URL": server.url, "COMPRESSOR_API_KEY": key}
        out = cli(client, "submit", "--model", "smollm2-135m", "--recipe", "w4a16-rtn", "--set", "eval.max_tokens=512",
                  "--idempotency-key", "ci-1", "--wait", "--timeout", "60")
        assert out.returncode == 0, out.stderr + server.output()
        job_id = out.stdout.split()[0]
        assert out.stdout.splitlines()[-1].split()[:2] == [job_id, "succeeded"]
        again = cli(client, "submit", "--model", "smollm2-135m", "--recipe", "w4a16-rtn", "--set", "eval.max_tokens=512",
                    "--idempotency-key", "ci-1", "--json")
        assert json.loads(again.stdout)["id"] == job_id
        status = json.loads(cli(client, "status", job_id, "--json").stdout)
        assert status["spec"]["recipe"]["eval"]["max_tokens"] == 512 and status["status"] == "succeeded"
        dl = cli(client, "download", job_id, "--out", str(tmp_path / "dl"), "--name", "report.json")
        assert dl.returncode == 0 and json.loads((tmp_path / "dl" / "report.json").read_text())["job"]["dry_run"] is True
        assert not (tmp_path / "dl" / "checkpoint").exists()

        cancel = cli(client, "cancel", job_id)
        assert cancel.returncode == 2 and "409" in cancel.stderr and "already succeeded" in cancel.stderr
        unknown = cli(client, "submit", "--model", "llama-9000", "--recipe", "w4a16-rtn")
        assert unknown.returncode == 2 and "models in the store: smollm2-135m" in unknown.stderr
        typo = cli(client, "submit", "--model", "smollm2-135m", "--recipe", "w4a16-rtn", "--set", "eval.max_tokenz=1")
        assert typo.returncode == 2 and "recipe.set.eval.max_tokenz: eval has no field 'max_tokenz'" in typo.stderr
        bad_key = cli({**client, "COMPRESSOR_API_KEY": "cmp_wrong"}, "status", job_id)
        assert bad_key.returncode == 2 and "401" in bad_key.stderr
        missing = cli(client, "download", job_id, "--out", str(tmp_path / "dl2"), "--name", "nope.bin")
        assert missing.returncode == 2 and "nope.bin" in missing.stderr
    finally:
        server.stop()
    key_id = listed.stdout.split("\t")[0]
    assert cli(env, "keys", "revoke", key_id).returncode == 0
    assert "\tci\trevoked" in cli(env, "keys", "list").stdout


def test_submit_import_of_a_sharded_folder_to_a_service(tmp_path: Path) -> None:
    from tests.model_folders import sharded_folder

    home, root = tmp_path / "home", tmp_path / "models-in"
    folder = sharded_folder(root / "tiny")
    env = service_env(tmp_path, home, COMPRESSOR_MODEL_SOURCES=str(root))
    key = cli(env, "keys", "create", "--name", "ci").stdout.strip()
    server = Server(env, tmp_path / "serve.log")
    try:
        client = {**env, "COMPRESSOR_URL": server.url, "COMPRESSOR_API_KEY": key}
        out = cli(client, "submit-import", str(folder), "--wait", "--timeout", "120")
        assert out.returncode == 0, out.stderr + server.output()
        assert out.stdout.splitlines()[-1].split()[1] == "succeeded"
        info = json.loads((home / "models" / "tiny" / "store.json").read_text())
        assert {f["name"] for f in info["files"]} >= {p.name for p in folder.glob("*.safetensors")}
        refused = cli(client, "submit-import", str(tmp_path))
        assert refused.returncode == 2 and "403" in refused.stderr and f"local folders under {root}" in refused.stderr
    finally:
        server.stop()
