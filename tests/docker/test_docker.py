"""docker/: compose parses, and every command, file and setting it names exists in the project."""

from __future__ import annotations

import argparse
import json
import re
import shlex

import pytest
import tomllib
import yaml

from service.settings import Settings
from api.cli import build_parser

from tests.service_setup import REPO

DOCKER = REPO / "docker"
CLI = ["compressor"]


def _compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def _parse_cli(argv: list[str]) -> argparse.Namespace:
    """Parse with the real `compressor` parser (api.cli), without running anything."""
    parser = build_parser()
    try:
        return parser.parse_args(argv)
    except SystemExit as e:  # argparse exits on unknown commands and options
        raise AssertionError(f"`compressor {' '.join(argv)}` is not a valid command") from e


def _dockerfile_cmd(text: str) -> list[str]:
    return json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))


def test_compose_services_and_commands_exist() -> None:
    compose = _compose()
    services = compose["services"]
    assert {"api", "worker", "redis", "postgres"} <= set(services)
    for name, svc in services.items():
        command = svc.get("command")
        if command and command[:1] == CLI:
            args = _parse_cli(command[1:])
            assert callable(args.func), name
        if "build" in svc:
            dockerfile = (DOCKER / svc["build"]["context"] / svc["build"]["dockerfile"]).resolve()
            assert dockerfile.is_file(), f"{name}: {dockerfile} missing"
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            assert source in compose["volumes"], f"{name}: volume {source} not declared"
    assert services["api"]["command"][1] == "serve" and services["worker"]["command"][1] == "worker"


def test_compose_environment_names_real_settings() -> None:
    fields = set(Settings.model_fields)
    for name, svc in _compose()["services"].items():
        for key in svc.get("environment", {}) or {}:
            if key.startswith("COMPRESSOR_"):
                assert key.removeprefix("COMPRESSOR_").lower() in fields, f"{name}: {key} is not a setting"
    env = _compose()["services"]["api"]["environment"]
    Settings(**{k.removeprefix("COMPRESSOR_").lower(): v for k, v in env.items()})  # values validate


@pytest.mark.parametrize("image", ["api", "worker"])
def test_dockerfiles_copy_existing_paths_and_run_real_commands(image: str) -> None:
    text = (DOCKER / f"{image}.Dockerfile").read_text()
    for line in re.findall(r"^COPY (.+)$", text, re.M):
        *sources, _dest = shlex.split(line)
        for src in sources:
            assert (REPO / src).exists(), f"{image}.Dockerfile copies missing {src}"
    cmd = _dockerfile_cmd(text)
    assert cmd[:1] == CLI and callable(_parse_cli(cmd[1:]).func)
    assert (DOCKER / f"{image}.Dockerfile.dockerignore").is_file()


def test_api_image_stays_torch_free() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    service = project["optional-dependencies"]["service"]
    assert service and not any(d.lower().startswith(("torch", "triton", "transformers")) for d in service)
    text = (DOCKER / "api.Dockerfile").read_text()
    assert "pip install --no-deps -e ." in text and "'torch' not in sys.modules" in text
    assert (REPO / "pyproject.toml").read_text().count('compressor = "api.cli:main"') == 1  # the CMD's script
