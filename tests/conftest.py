"""Shared fixtures: the real model imported once per test run, the bundled tokenizer, tiny models;
and for the service's tests (tests/service, tests/api, tests/workers, tests/e2e) real SQLite and
PostgreSQL databases, Redis and an S3 endpoint.

PostgreSQL: one database per test run (`svc_<random>`), dropped at the end; each test that
asks for `db_url` gets its own schema in it. Redis: a queue name per run. A service that
cannot be reached makes its tests skip with the reason (CI starts both). The service's
packages are imported inside the fixtures, so the library's tests run without them.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

# Triton reads this when a kernel is defined, so it must be set before anything imports
# triton_kernels; without a GPU the kernels run in Triton's interpreter.
if not os.environ.get("CUDA_VISIBLE_DEVICES") and not Path("/dev/nvidia0").exists():
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parent.parent
# One store for the whole run (and for later runs on the same checkout): the GGUF import
# takes ~15-50 s, a load from the store under a second.
PG_ADMIN_URL = os.environ.get("COMPRESSOR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("COMPRESSOR_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TEST_HOME = Path(os.environ.get("COMPRESSOR_TEST_HOME", REPO / ".cache" / "test-home"))


@pytest.fixture(params=["on", "off"])
def readback(request, monkeypatch) -> bool:
    """Runs a test with the CPU int4 layout read back (`on`: one int4 copy) and forced off (`off`:
    the fallback a CPU whose layout is unknown gets: both copies kept)."""
    from triton_kernels import cpu_int4

    monkeypatch.setenv(cpu_int4.READBACK_ENV, request.param)
    return request.param == "on"


@pytest.fixture(scope="session")
def model_store() -> Path:
    """COMPRESSOR_HOME with smollm2-135m imported; also exported to the environment for subprocesses."""
    from compressor.models.store import ModelStore

    ModelStore(TEST_HOME).import_bundled("smollm2-135m")
    os.environ["COMPRESSOR_HOME"] = str(TEST_HOME)
    return TEST_HOME


@pytest.fixture(scope="session")
def smollm(model_store: Path):
    """(model, tokenizer) of the real model, loaded once; tests must not modify the model in place."""
    from compressor.models.store import ModelStore

    return ModelStore(model_store).load("smollm2-135m")


@pytest.fixture(scope="session")
def tokenizer(smollm):
    return smollm[1]


@pytest.fixture()
def tiny_store(model_store: Path, tmp_path: Path) -> Path:
    """A store holding a tiny Llama that speaks the bundled tokenizer's vocabulary."""
    from transformers import AutoTokenizer

    from compressor.models.store import ModelStore
    from tests.random_models import tiny_llama

    tok = AutoTokenizer.from_pretrained(model_store / "models" / "smollm2-135m")
    home = tmp_path / "home"
    ModelStore(home).add_model("tiny-llama", tiny_llama(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                                                        num_attention_heads=4, head_dim=16), tok, source="test")
    return home


# --------------------------------------------------------------------------- the service's


def _reachable(url: str, default_port: int) -> bool:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    try:
        with socket.create_connection((u.host or "127.0.0.1", u.port or default_port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """URL of a fresh PostgreSQL database for this test run."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    if not _reachable(PG_ADMIN_URL, 5432):
        pytest.skip(f"PostgreSQL not reachable at {make_url(PG_ADMIN_URL).render_as_string()}")
    name = f"svc_{secrets.token_hex(6)}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file, or a fresh schema in the run's PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    base = request.getfixturevalue("pg_database")
    schema = f"t_{secrets.token_hex(5)}"
    engine = create_engine(base, isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        c.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield make_url(base).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    finally:
        with engine.connect() as c:
            c.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture
def db(db_url: str) -> Iterator:
    from service.db.database import Database

    database = Database(db_url)
    database.migrate()
    yield database
    database.dispose()


@pytest.fixture(scope="session")
def redis_url() -> str:
    if not _reachable(REDIS_URL, 6379):
        pytest.skip(f"Redis not reachable at {REDIS_URL}")
    return REDIS_URL


S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """An S3-compatible HTTP endpoint for this run: moto's server (an S3 *emulator*, not AWS)
    listening on a free port, with throwaway credentials in the environment."""
    server_mod = pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install -e '.[test]')")
    saved = {k: os.environ.get(k) for k in S3_CREDENTIALS}
    os.environ.update(S3_CREDENTIALS)
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def s3_url(s3_endpoint: str) -> str:
    """`s3://<fresh bucket>/artifacts?endpoint_url=…`: an empty bucket per test."""
    import boto3

    bucket = f"test-{secrets.token_hex(6)}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/artifacts?endpoint_url={s3_endpoint}&region=us-east-1"


@pytest.fixture()
def tiny4_store(model_store: Path, tmp_path: Path) -> Path:
    """A store holding `tiny4`: a 4-layer tiny Llama speaking the bundled tokenizer (layer-by-layer resume tests)."""
    from transformers import AutoTokenizer

    from compressor.models.store import ModelStore
    from tests.random_models import tiny_llama

    tok = AutoTokenizer.from_pretrained(model_store / "models" / "smollm2-135m")
    home = tmp_path / "home"
    ModelStore(home).add_model("tiny4", tiny_llama(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                                                   num_attention_heads=4, head_dim=16, num_hidden_layers=4), tok, source="test")
    return home


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads, and on a shared 2-core machine OpenMP spinning makes them 10-30x slower.

    A module of tiny-model tests asks for it with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
