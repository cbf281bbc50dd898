"""Error bodies: every error is `{"detail": …}`; validation errors list `loc`, `msg`, `type`."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

log = logging.getLogger("compressor.api")


def _clean(error: dict) -> dict:
    # no `input` echo (it can be large, and it repeats what the client sent)
    return {"loc": list(error.get("loc", ())), "msg": error.get("msg", ""), "type": error.get("type", "value_error")}


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse({"detail": [_clean(e) for e in exc.errors()]}, status_code=422)


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": f"internal error ({type(exc).__name__}); see the server log"}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, unexpected_error)
