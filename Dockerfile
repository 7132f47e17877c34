# campaign-service: one image, every role. `docker build -t campaign-service .`
# Build stage: compile wheels (build tools stay here).
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY worker ./worker
COPY schemas ./schemas
COPY migrations ./migrations
# Only what production runs: the package and its dependencies. The dev extra and
# devtools/ (local stack, demo, terminal view) stay out (docs/development.md).
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --upgrade pip \
    && /opt/venv/bin/pip install .

# Final stage: the virtualenv only; no compiler, no sources beyond the package, no root.
FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LOG_FORMAT=json
RUN groupadd --system --gid 10001 campaign \
    && useradd --system --uid 10001 --gid campaign --home-dir /app --create-home campaign
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
USER 10001:10001
EXPOSE 8000 9100
ENTRYPOINT ["campaignctl"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
