# The GPU worker image: torch with CUDA, the whole library, and a Celery worker that runs one
# job at a time in a spawned child. One container per GPU. Build from the repository root:
#   docker build -f docker/worker.Dockerfile -t compressor-worker .
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    COMPRESSOR_HOME=/data COMPRESSOR_EXECUTOR=celery
WORKDIR /app

COPY pyproject.toml ./
COPY compressor ./compressor
COPY service ./service
COPY api ./api
COPY workers ./workers
COPY triton_kernels ./triton_kernels
# torch comes from the base image (its version satisfies the project's bound)
RUN pip install -e ".[service,kernels]" \
    && useradd --uid 10001 --create-home compressor && mkdir -p /data && chown compressor /data
USER compressor
VOLUME /data
CMD ["compressor", "worker", "--log-level", "info"]
