"""Resume state: finished layers, training steps and scores of a job, fingerprinted, so a crashed job resumes."""

from compressor.checkpoints.fingerprint import Fingerprint
from compressor.checkpoints.store import CheckpointStore, ResumeInfo, Unit

__all__ = ["CheckpointStore", "Fingerprint", "ResumeInfo", "Unit"]
