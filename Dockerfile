# The service image: `kb serve` on port 8080, answering from the database named by KB_DATABASE_URL.
# It listens on 0.0.0.0, so it starts only with KB_WEB_IDENTITY_HEADER set (a sign-in proxy in front
# names each user); set KB_ALLOWED_HOSTS and KB_METRICS_TOKEN too (docs/operations.md, "Web surface").
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    KB_HOST=0.0.0.0 \
    KB_PORT=8080 \
    KB_DATA_DIR=/data

WORKDIR /app
# The CPU build of torch: pass its wheel index as a build argument, or pre-seed a wheel house.
ARG PIP_EXTRA_INDEX_URL=""
RUN pip install "torch==2.13.0"

COPY pyproject.toml README.md ./
COPY core core
COPY privacy privacy
COPY knowledge knowledge
COPY bot bot
COPY push push
COPY training training
COPY app app
RUN pip install . && useradd --create-home --uid 10001 kb && mkdir -p /data && chown kb /data

COPY examples examples
USER kb
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"
CMD ["sh", "-c", "kb db upgrade && kb serve"]
