"""/v1/jobs/{id}/artifacts: the files a succeeded job produced, with their SHA-256."""

from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path
from fastapi.responses import FileResponse

from api.deps import DatabaseDep, OwnerDep, SettingsDep
from api.routes.jobs import ERRORS, JobId, _get_owned
from api.schemas import Artifact, ArtifactList
from workers.artifacts import LocalArtifactStore

router = APIRouter(prefix="/v1/jobs", tags=["artifacts"])


@router.get("/{job_id}/artifacts", response_model=ArtifactList, operation_id="artifacts-list", responses=ERRORS)
def list_artifacts(job_id: JobId, owner: OwnerDep, db: DatabaseDep) -> ArtifactList:
    job = _get_owned(db, job_id, owner)
    return ArtifactList(data=[Artifact(**a, url=f"/v1/jobs/{job_id}/artifacts/{a['name']}") for a in job.artifacts or []])


@router.get(
    "/{job_id}/artifacts/{name:path}", operation_id="artifacts-download", response_class=FileResponse,
    responses={**ERRORS, 200: {"content": {"application/octet-stream": {}},
                               "description": "the file; `X-Checksum-SHA256` and `Repr-Digest` carry its SHA-256"},
               206: {"description": "the requested byte range (HTTP Range)"}},
)
def download_artifact(
    job_id: JobId, owner: OwnerDep, db: DatabaseDep, settings: SettingsDep,
    name: Annotated[str, Path(max_length=512, description="an artifact name from the job's `artifacts` list")],
) -> FileResponse:
    job = _get_owned(db, job_id, owner)
    entry = next((a for a in job.artifacts or [] if a["name"] == name), None)
    path = LocalArtifactStore(settings.artifacts_dir).path(job_id, name) if entry else None
    if entry is None or path is None:
        known = ", ".join(a["name"] for a in job.artifacts or []) or "none yet"
        raise HTTPException(404, f"job {job_id} has no artifact {name!r}; artifacts: {known}")
    digest = base64.b64encode(bytes.fromhex(entry["sha256"])).decode()
    return FileResponse(
        path, filename=path.name, media_type="application/octet-stream",
        headers={"X-Checksum-SHA256": entry["sha256"], "Repr-Digest": f"sha-256=:{digest}:",
                 "ETag": f'"{entry["sha256"]}"', "Cache-Control": "private, max-age=86400, immutable"},
    )
