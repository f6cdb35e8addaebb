# okr-sync: the same image for every role; the command picks it
#   okr-sync serve   API (+ scheduler unless OKR_ROLE=api)   (the default CMD)
#   okr-sync worker  scheduled syncs only
#
# Build: `docker build -t okr-sync .` (podman: add `--format docker`, or the OCI format
# drops HEALTHCHECK). Where no registry image can be pulled, build a local base first with
# deploy/local-base-image.sh and pass it as BASE_IMAGE (docs/containers.md).
ARG BASE_IMAGE=python:3.12-slim
FROM ${BASE_IMAGE}
# A CA bundle for pip behind a TLS-inspecting proxy, mounted for the build only.
ARG PIP_CERT

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    OKR_DATABASE_URL=sqlite:////data/okr-sync.db

WORKDIR /app
# The dependencies first, in a layer of their own: a change to the code alone reuses it.
COPY pyproject.toml ./
RUN python3 -m venv /opt/venv \
 && python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && /opt/venv/bin/pip install --no-cache-dir ${PIP_CERT:+--cert "$PIP_CERT"} -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt \
 && useradd --uid 10001 --home-dir /data --create-home --shell /usr/sbin/nologin okr
COPY README.md ./
COPY service ./service
COPY connectors ./connectors
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps ${PIP_CERT:+--cert "$PIP_CERT"} .

USER 10001:10001
VOLUME ["/data"]
EXPOSE 8000
# /readyz: the process answers and the database does. The first start loads and syncs the
# demo before serving, hence the start period.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python3", "-c", "import sys, urllib.request as u; sys.exit(u.urlopen('http://127.0.0.1:8000/readyz', timeout=4).status != 200)"]
# Exec form: okr-sync is PID 1 and receives SIGTERM itself (a shell form would leave it
# to /bin/sh, which does not forward it); serve and worker both end cleanly on it.
ENTRYPOINT ["okr-sync"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
