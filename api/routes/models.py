"""/v1/models: import a model (as a job), list, show, delete.

Models are shared between API keys: the store is one namespace that every key's jobs name
models in, so every key lists and uses every model. The key that imported a model over REST
owns it in one respect: only that key may delete it. Bundled and CLI-imported models have no
owner and cannot be deleted over REST. A model is not deleted while unfinished jobs name it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Path, Response
from sqlalchemy.exc import IntegrityError

from api.deps import DatabaseDep, ExecutorDep, OwnerDep, SettingsDep
from api.submission import hand_to_executor, replayed_job
from api.schemas import (
    ERRORS, ErrorBody, JobPublic, ModelDetail, ModelImportRequest, ModelInfo, ModelList, RecipeFit,
)
from compressor.models.compatibility import Support, model_support
from compressor.models.sources import (
    SourceError, SourceNotAllowed, UnknownSchemeError, default_name, parse_source,
)
from compressor.models.store import ModelStore, UnknownModelError
from service.db import idempotency
from service.db import jobs as jobs_db
from service.db import model_imports
from service.records import MODEL_NAME_PATTERN, JobKind, ModelImportSpec

router = APIRouter(prefix="/v1/models", tags=["models"])

ModelName = Annotated[str, Path(pattern=MODEL_NAME_PATTERN, description="a store name, e.g. smollm2-135m")]
IMPORT_ERRORS = {**ERRORS, 403: {"model": ErrorBody}, 409: {"model": ErrorBody}, 503: {"model": ErrorBody}}


def _source_error(e: SourceError) -> HTTPException:
    kind = "unknown_scheme" if isinstance(e, UnknownSchemeError) else "invalid_source"
    return HTTPException(422, [{"loc": ["body", "source"], "msg": str(e), "type": kind}])


@router.post("", status_code=202, response_model=JobPublic, operation_id="models-import",
             responses={**IMPORT_ERRORS, 200: {"model": JobPublic, "description": "replay of an Idempotency-Key"}})
def import_model(
    body: ModelImportRequest, owner: OwnerDep, db: DatabaseDep, settings: SettingsDep, executor: ExecutorDep,
    response: Response,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255,
                                                  pattern=r"^[\x21-\x7e]+$")] = None,
) -> JobPublic:
    """Import a model from an allowed source as a job (`kind: model-import`): follow it at /v1/jobs/{id},
    cancel it there. Safetensors only (pickle weights are refused), never custom code (`auto_map`)."""
    try:
        source = parse_source(body.source, body.revision)
        settings.source_policy.admit(source)
    except SourceNotAllowed as e:
        raise HTTPException(403, str(e)) from None
    except SourceError as e:
        raise _source_error(e) from None
    name = body.name or default_name(source)
    spec = ModelImportSpec(name=name, source=body.source, revision=body.revision,
                           allowed_sources=settings.model_sources, max_bytes=settings.max_model_bytes)
    spec_json = spec.model_dump(mode="json")
    request_hash = hashlib.sha256(json.dumps({"import": spec_json}, sort_keys=True).encode()).hexdigest()
    if idempotency_key is not None and (replay := replayed_job(db, owner, idempotency_key, request_hash, response)):
        return replay
    store = ModelStore(settings.home)
    if name in store.names():
        raise HTTPException(409, f"the store already holds a model {name!r}; pick another name or delete it first")
    try:
        with db.transaction() as s:
            row = model_imports.find(s, name)
            if row is not None and row.job_status in model_imports.LIVE_STATUSES:
                raise HTTPException(409, f"model {name!r} is being imported by job {row.import_job_id}")
            job = jobs_db.create_job(s, owner=owner, spec=spec_json, model=name, recipe_name=None,
                                     executor=executor.name, max_attempts=settings.max_attempts,
                                     kind=JobKind.model_import)
            model_imports.reserve(s, name, owner, job.id, str(source))
            if idempotency_key is not None:
                idempotency.record(s, owner, idempotency_key, request_hash, job.id)
    except IntegrityError:  # a concurrent request won the race for the name or the key
        if idempotency_key is not None and (replay := replayed_job(db, owner, idempotency_key, request_hash, response)):
            return replay
        raise HTTPException(409, f"model {name!r} is being imported by another request") from None
    return hand_to_executor(db, executor, job, "import job", on_failure=lambda s: model_imports.release(s, name))


def _importer(row: Any, owner: str) -> str:
    return "cli" if row is None else "you" if row.owner == owner else "another key"


def _info_fields(info: dict[str, Any], row: Any, owner: str) -> dict[str, Any]:
    fields = {k: v for k, v in info.items() if k in ModelInfo.model_fields and k not in ("status", "imported_by")}
    return {**fields, "imported_by": _importer(row, owner),
            "import_job_id": row.import_job_id if row is not None and row.owner == owner else None}


@router.get("", response_model=ModelList, operation_id="models-list", responses={401: {"model": ErrorBody}})
def list_models(owner: OwnerDep, db: DatabaseDep, settings: SettingsDep) -> ModelList:
    """Every model in the store (shared by all keys), and the imports still running."""
    with db.read() as s:
        rows = {r.name: r for r in model_imports.rows(s)}
    ready = ModelStore(settings.home).list()
    data = [ModelInfo(**_info_fields(info, rows.get(info["name"]), owner)) for info in ready]
    names = {info["name"] for info in ready}
    data += [ModelInfo(name=r.name, status="importing", source=r.source, imported_by=_importer(r, owner),
                       import_job_id=r.import_job_id if r.owner == owner else None)
             for r in rows.values() if r.name not in names and r.job_status in model_imports.LIVE_STATUSES]
    return ModelList(data=sorted(data, key=lambda m: m.name))


@router.get("/{name}", response_model=ModelDetail, operation_id="models-get", responses=ERRORS)
def get_model(name: ModelName, owner: OwnerDep, db: DatabaseDep, settings: SettingsDep) -> ModelDetail:
    """A model's files (sha256s), layers and widths, and which methods and formats apply, or why not."""
    with db.read() as s:
        row = model_imports.find(s, name)
    store = ModelStore(settings.home)
    try:
        info, config = store.info(name), store.config(name)
    except UnknownModelError:
        if row is not None and row.job_status in model_imports.LIVE_STATUSES:
            return ModelDetail(name=name, status="importing", source=row.source, imported_by=_importer(row, owner),
                               import_job_id=row.import_job_id if row.owner == owner else None)
        raise HTTPException(404, f"no model {name!r} in the store") from None
    except (OSError, ValueError) as e:
        raise HTTPException(404, f"model {name!r} has no readable config.json ({e})") from None
    support = model_support(config)
    formats = {"compressed-tensors": Support(ok=support.supported, reason=support.reason)}
    return ModelDetail(**_info_fields(info, row, owner), files=info.get("files", []), support=support, formats=formats,
                       recipes=recipe_fits(config))


def recipe_fits(config: dict[str, Any]) -> dict[str, RecipeFit]:
    """Each ready-made recipe on the model of `config`: the submit-time check's verdict and the engine table."""
    from api.job_request import ready_made_recipe_specs
    from compressor.export.engines import recipe_engine_tables
    from compressor.models.compatibility import check_recipe_against_model

    tables = recipe_engine_tables()
    fits = {}
    for name, recipe in ready_made_recipe_specs().items():  # parsed once per process, not per request
        problems = check_recipe_against_model(config, recipe)
        fits[name] = RecipeFit(applies=not problems, reason="; ".join(problems) or None, engines=tables.get(name, {}))
    return fits


@router.delete("/{name}", status_code=204, operation_id="models-delete",
               responses={**ERRORS, 403: {"model": ErrorBody}, 409: {"model": ErrorBody}})
def delete_model(name: ModelName, owner: OwnerDep, db: DatabaseDep, settings: SettingsDep) -> Response:
    """Delete a model you imported over REST; refused (409) while unfinished jobs name it."""
    store = ModelStore(settings.home)
    with db.read() as s:
        row = model_imports.find(s, name)
    if name not in store.names():
        raise HTTPException(404, f"no model {name!r} in the store")
    if row is None:
        raise HTTPException(403, f"model {name!r} was added with the CLI (or is bundled): delete it there "
                                 "(`compressor models delete`)")
    if row.owner != owner:
        raise HTTPException(403, f"model {name!r} was imported by another API key; only that key may delete it")
    with db.transaction() as s:
        using = model_imports.jobs_using(s, name)
        if using:
            raise HTTPException(409, f"model {name!r} is used by {len(using)} unfinished job(s) "
                                     f"({', '.join(using[:5])}); cancel them or wait until they end")
        model_imports.release(s, name)
        store.delete(name)
    return Response(status_code=204)
