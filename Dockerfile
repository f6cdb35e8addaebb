# okr-sync: the same image for every role; the command picks it
#   okr-sync serve   API (+ scheduler unless OKR_ROLE=api)
#   okr-sync worker  scheduled syncs only
ARG BASE_IMAGE=python:3.12-slim
FROM ${BASE_IMAGE}
ARG PIP_CERT

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    OKR_DATABASE_URL=sqlite:////data/okr-sync.db

WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY connectors ./connectors
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir ${PIP_CERT:+--cert "$PIP_CERT"} . \
 && useradd --system --uid 10001 --home-dir /data --create-home okr

USER okr
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD python3 -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz').status == 200 else 1)"
CMD ["okr-sync", "serve", "--host", "0.0.0.0", "--port", "8000"]
