"""`hf://org/model[@revision]` through huggingface_hub: listed first, then fetched file by file.

Offline it fails at once: `HF_HUB_OFFLINE=1` is refused before any request, and an unreachable
endpoint fails its connect probe within `CONNECT_TIMEOUT_S`, never hanging on retries. The
listing (with LFS sha256s) comes before any download, so pickle-only repos, custom code and the
size limit are refused without fetching weights. The endpoint is huggingface_hub's own
(`HF_ENDPOINT`); a token comes from its usual places (`HF_TOKEN`, the login cache).
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from compressor.models.sources.copying import BytesDone, hash_file
from compressor.models.sources.errors import SourceError, SourceUnavailable
from compressor.models.sources.location import HubSource

CONNECT_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = 15.0
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def hub_offline() -> str | None:
    """The variable that puts huggingface_hub offline, if one does."""
    for var in OFFLINE_VARIABLES:
        if os.environ.get(var, "").strip().lower() in ("1", "on", "yes", "true"):
            return var
    return None


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return os.environ.get("HF_ENDPOINT", constants.ENDPOINT).rstrip("/")


class HubFolder:
    """A hub repo at one commit (the revision is resolved once, so every file comes from the same commit)."""

    def __init__(self, source: HubSource, endpoint: str | None = None):
        self.source, self.where = source, str(source)
        self.endpoint = (endpoint or hub_endpoint()).rstrip("/")
        self.revision: str | None = None
        self._lfs_sha: dict[str, str] = {}

    def _unavailable(self, why: str) -> SourceUnavailable:
        return SourceUnavailable(f"cannot import {self.where} from the hub at {self.endpoint}: {why}. Without a "
                                 "reachable hub, download the repo elsewhere and import its folder (or an s3:// copy)")

    def _probe(self) -> None:
        if (var := hub_offline()) is not None:
            raise self._unavailable(f"{var} is set (offline mode)")
        parts = urlsplit(self.endpoint)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            socket.create_connection((parts.hostname or "", port), timeout=CONNECT_TIMEOUT_S).close()
        except OSError as e:
            raise self._unavailable(f"no connection to {parts.hostname}:{port} within {CONNECT_TIMEOUT_S:g} s ({e})") from None

    def listing(self) -> dict[str, int]:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

        self._probe()
        try:
            info = HfApi(endpoint=self.endpoint).model_info(self.source.repo_id, revision=self.source.revision,
                                                            files_metadata=True, timeout=REQUEST_TIMEOUT_S)
        except GatedRepoError:
            raise self._unavailable("the repo is gated: accept its terms on the hub and set HF_TOKEN") from None
        except RevisionNotFoundError:
            raise self._unavailable(f"no revision {self.source.revision!r}") from None
        except RepositoryNotFoundError:
            raise self._unavailable("no such repo (or it is private: set HF_TOKEN)") from None
        except (HfHubHTTPError, OSError) as e:
            raise self._unavailable(f"{type(e).__name__}: {e}") from None
        self.revision = info.sha
        listing: dict[str, int] = {}
        for sibling in info.siblings or []:
            listing[sibling.rfilename] = int(sibling.size or 0)
            lfs: Any = sibling.lfs
            if lfs:
                self._lfs_sha[sibling.rfilename] = lfs["sha256"] if isinstance(lfs, dict) else lfs.sha256
        return listing

    def fetch(self, name: str, dst: Path, on_bytes: BytesDone) -> str:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import HfHubHTTPError

        staging = dst.parent / ".hub-download"
        try:
            path = Path(hf_hub_download(self.source.repo_id, name, revision=self.revision or self.source.revision,
                                        local_dir=staging, endpoint=self.endpoint, etag_timeout=REQUEST_TIMEOUT_S))
            os.replace(path, dst)
        except (HfHubHTTPError, OSError) as e:
            raise self._unavailable(f"downloading {name} failed: {type(e).__name__}: {e}") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        digest = hash_file(dst, on_bytes)
        expected = self._lfs_sha.get(name)
        if expected is not None and expected != digest:
            raise SourceError(f"{self.where}: {name} has sha256 {digest}, the hub lists {expected}; import it again")
        return digest
