# carehook: the same install steps as `make run` (a venv with the package), nothing else.
# Not built here (this machine has no Docker engine); kept minimal on purpose.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m venv /app/.venv \
 && /app/.venv/bin/python -m pip install --no-cache-dir --upgrade pip \
 && /app/.venv/bin/pip install --no-cache-dir .
ENV PATH=/app/.venv/bin:$PATH
# the config (sources, secrets, [storage] url) is mounted at /etc/carehook/carehook.toml and the
# payload keys come from CAREHOOK_DATA_KEYS: both must be the same on every machine
USER nobody
EXPOSE 8000
CMD ["carehook", "serve", "--no-worker", "--host", "0.0.0.0", "--port", "8000", "--config", "/etc/carehook/carehook.toml"]
