"""/v1/jobs/{id}/artifacts: the files a succeeded job produced, with their SHA-256.

Downloads come from whichever store the settings name (a local folder or an S3-compatible
bucket); both answer with the file's SHA-256 in `X-Checksum-SHA256`/`Repr-Digest` and honour
HTTP Range.
"""

from __future__ import annotations

import base64
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.responses import FileResponse, Response, StreamingResponse

from api.byte_ranges import parse_byte_range
from api.deps import ArtifactStoreDep, OwnedJobDep
from api.schemas import ERRORS, ArtifactList, artifacts_of
from service.storage import ArtifactStoreError, StoredFile

router = APIRouter(prefix="/v1/jobs", tags=["artifacts"])


@router.get("/{job_id}/artifacts", response_model=ArtifactList, operation_id="artifacts-list", responses=ERRORS)
async def list_artifacts(job: OwnedJobDep) -> ArtifactList:
    return ArtifactList(data=artifacts_of(job))


@router.get(
    "/{job_id}/artifacts/{name:path}", operation_id="artifacts-download", response_class=FileResponse,
    responses={**ERRORS, 200: {"content": {"application/octet-stream": {}},
                               "description": "the file; `X-Checksum-SHA256` and `Repr-Digest` carry its SHA-256"},
               206: {"description": "the requested byte range (HTTP Range)"},
               416: {"description": "the range lies outside the file"},
               503: {"description": "the artifact store cannot be reached"}},
)
def download_artifact(
    request: Request, job: OwnedJobDep, store: ArtifactStoreDep,
    name: Annotated[str, Path(max_length=512, description="an artifact name from the job's `artifacts` list")],
) -> Response:
    job_id = job.id
    entry = next((a for a in job.artifacts or [] if a["name"] == name), None)
    try:
        stored = store.open(job_id, name) if entry else None
    except ArtifactStoreError as e:
        raise HTTPException(503, f"the artifact store is unavailable: {e}", headers={"Retry-After": "5"}) from e
    if entry is None or stored is None:
        known = ", ".join(a["name"] for a in job.artifacts or []) or "none yet"
        raise HTTPException(404, f"job {job_id} has no artifact {name!r}; artifacts: {known}")
    digest = base64.b64encode(bytes.fromhex(entry["sha256"])).decode()
    headers = {"X-Checksum-SHA256": entry["sha256"], "Repr-Digest": f"sha-256=:{digest}:",
               "ETag": f'"{entry["sha256"]}"', "Cache-Control": "private, max-age=86400, immutable"}
    if stored.local_path is not None:
        return FileResponse(stored.local_path, filename=stored.local_path.name,
                            media_type="application/octet-stream", headers=headers)
    try:
        return _stream(stored, request.headers.get("range"), headers)
    except ArtifactStoreError as e:
        raise HTTPException(503, f"the artifact store is unavailable: {e}", headers={"Retry-After": "5"}) from e


def _stream(stored: StoredFile, range_header: str | None, headers: dict[str, str]) -> StreamingResponse:
    """A remote file as 200, or 206 for one byte range (read from the store by range too)."""
    byte_range = parse_byte_range(range_header, stored.size)
    start, end = byte_range or (0, stored.size - 1)
    headers = {**headers, "Accept-Ranges": "bytes", "Content-Length": str(max(end - start + 1, 0)),
               "Content-Disposition": f"attachment; filename*=utf-8''{quote(stored.name.rsplit('/', 1)[-1])}"}
    if byte_range:
        headers["Content-Range"] = f"bytes {start}-{end}/{stored.size}"
    body = stored.read(start, end) if stored.size else iter(())
    return StreamingResponse(body, status_code=206 if byte_range else 200,
                             media_type="application/octet-stream", headers=headers)
