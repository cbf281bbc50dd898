"""`compressor run` through its command line: progress a person can read in a log, then the summary."""

from pathlib import Path

import yaml

from compressor.cli import main

RECIPE = {
    "stages": [{"quantize": {"weights": {"bits": 4, "strategy": "group", "group_size": 32, "method": "rtn"}}}],
    "eval": {"datasets": ["wiki"], "max_tokens": 256, "window": 64, "kl": False},
}


def test_run_prints_layers_rate_eta_and_summary(tiny_store: Path, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("COMPRESSOR_HOME", str(tiny_store))
    recipe = tmp_path / "w4.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    assert main(["run", "--model", "tiny-llama", "--recipe", str(recipe), "--out", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    log = captured.err
    assert "load loading tiny-llama" in log
    assert "quantize stage 1/1: quantize" in log
    (layer_line,) = [line for line in log.splitlines() if "quantize layer 2/2" in line]
    assert "layer/s" in layer_line and "ETA 0:00:00" in layer_line
    assert "eval:wiki wiki: 4/4 windows" in log and "ETA 0:00:00" in log
    assert "perplexity" in captured.out and "bits per weight (decoder linears): 4.500" in captured.out
    assert (tmp_path / "out" / "report.json").exists()
    from compressor.export.format import sha256_file

    sha = sha256_file(tmp_path / "out" / "checkpoint" / "model.safetensors")
    assert f"model.safetensors sha256 {sha}" in captured.out.splitlines()
    assert not (tmp_path / "out" / "resume").exists()  # the resume state is gone once the job succeeded


def test_resume_without_an_interrupted_job_says_so(tmp_path: Path, capsys):
    assert main(["run", "--resume", str(tmp_path / "nothing")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"--resume {tmp_path / 'nothing'}: no interrupted job there" in err
    assert main(["run", "--resume", str(tmp_path), "--model", "m"]) == 2
    assert "do not combine it with --model, --recipe or --out" in " ".join(capsys.readouterr().err.split())
    assert main(["run", "--model", "m"]) == 2
    assert "run needs --recipe, --out (or --resume OUT" in " ".join(capsys.readouterr().err.split())


def test_invalid_recipe_names_the_stage(tmp_path: Path, capsys):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(yaml.safe_dump({"stages": [{"ostquant": {}}]}))
    assert main(["run", "--model", "tiny-llama", "--recipe", str(recipe), "--out", str(tmp_path / "out")]) == 2
    assert "stages[0].ostquant: needs a later quantize stage" in " ".join(capsys.readouterr().err.split())
