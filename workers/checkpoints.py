"""Where a job's checkpoints live between attempts, and their removal once the job has ended.

Local artifact store: `Settings.checkpoints_dir/<job>` (shared by the attempts, and by workers
that share the folder). S3 artifact store: mirrored under the job's prefix in the bucket and
restored into each attempt's staging folder (`service.storage.checkpoints`).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from service.settings import Settings
from service.storage.checkpoints import checkpoint_mirror

log = logging.getLogger("compressor.worker")


def shared_checkpoints_dir(settings: Settings, job_id: str) -> Path:
    return Path(settings.checkpoints_dir) / job_id


def discard_checkpoints(settings: Settings, job_id: str) -> None:
    """Remove a terminal job's checkpoints, locally and in the bucket; a failure only logs (the outcome stands)."""
    shutil.rmtree(shared_checkpoints_dir(settings, job_id), ignore_errors=True)
    mirror = checkpoint_mirror(settings.artifacts_url, job_id)
    if mirror is not None:
        try:
            mirror.delete()
        except OSError as e:  # garbage a bucket lifecycle rule can take
            log.warning("job %s: could not delete its mirrored checkpoints: %s", job_id, e)
