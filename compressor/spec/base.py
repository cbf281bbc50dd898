"""The base of every spec model, the spec version, and the pattern of a store model name."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

SPEC_VERSION = 1
MODEL_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"


class StrictModel(BaseModel):
    """Base for every spec model: unknown fields are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
