"""Executors: the local worker loop and Celery, both running `supervisor.run_job`.

Nothing here imports torch at module level: the library is imported only inside the
spawned job process (`job_process.py`).
"""
