# The API image: FastAPI + the torch-free part of the library (spec, model store listing,
# recipes). No torch: jobs run in the worker image. Build from the repository root:
#   docker build -f docker/api.Dockerfile -t compressor-api .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    COMPRESSOR_HOME=/data COMPRESSOR_EXECUTOR=celery
WORKDIR /app

# the service dependencies, read from pyproject.toml (its `service` extra, less the test tools),
# plus the two the spec needs; the package itself goes in with --no-deps so torch never comes
COPY pyproject.toml ./
RUN python -c "import re, tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
name = lambda d: re.split('[<>=\\[ ]', d)[0].lower(); \
print('\n'.join([d for d in p['optional-dependencies']['service'] if name(d) not in ('schemathesis', 'selenium')] \
+ [d for d in p['dependencies'] if name(d) in ('pydantic', 'pyyaml')]))" > /tmp/requirements.txt \
    && cat /tmp/requirements.txt && pip install -r /tmp/requirements.txt

COPY compressor ./compressor
COPY service ./service
COPY api ./api
COPY workers ./workers
# editable: the code runs from /app, so migrations and the dashboard's static files
# are found where the source tree has them
RUN pip install --no-deps -e . && python -c "import api.main, api.cli, sys; assert 'torch' not in sys.modules" \
    && useradd --uid 10001 --create-home compressor && mkdir -p /data && chown compressor /data
USER compressor
VOLUME /data
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
CMD ["compressor", "serve", "--host", "0.0.0.0", "--port", "8000"]
