# One image for worker, study_admin and optuna-dashboard. CPU-only torch, non-root, exec-form commands.
# Layers: torch (from a CPU-only index) -> the pinned dependencies of requirements.lock -> project code,
# so editing the code rebuilds only the last, small layer (deploy/lock.py regenerates the lock).

# The base image: pin it by digest for reproducible builds, e.g.
#   --build-arg PYTHON_IMAGE=python:3.11-slim@sha256:<digest>
# (a tag is the default because offline builds, like the test engine's stand-in images, cannot resolve digests).
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS deps
# The official CPU-only wheel index; never PyPI's multi-GB CUDA build.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# Set when TORCH_INDEX_URL is a plain-http mirror.
ARG PIP_TRUSTED_HOST=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
RUN pip install --index-url "$TORCH_INDEX_URL" ${PIP_TRUSTED_HOST:+--trusted-host "$PIP_TRUSTED_HOST"} torch==2.13.0
COPY requirements.lock /tmp/requirements.lock
RUN pip install --no-deps -r /tmp/requirements.lock && rm /tmp/requirements.lock

FROM ${PYTHON_IMAGE}
# Mesa's EGL renders MuJoCo's rollout videos headless, on the CPU.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libegl1 libgl1 libgl1-mesa-dri \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 10001 tuner && useradd --uid 10001 --gid tuner --create-home tuner \
 && install -d -o tuner -g tuner /artifacts
COPY --from=deps /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    MUJOCO_GL=egl \
    WORKER_HEALTH_FILE=/tmp/worker-alive
COPY --chown=tuner:tuner pyproject.toml README.md /app/
COPY --chown=tuner:tuner study_contract /app/study_contract
COPY --chown=tuner:tuner study_admin /app/study_admin
COPY --chown=tuner:tuner worker /app/worker
# --no-deps: everything is in requirements.lock already; pip check proves it.
RUN pip install --no-cache-dir --no-deps --no-build-isolation /app && pip check
USER tuner
WORKDIR /home/tuner
# Healthy while the worker loop polls or its trial's training steps advance (worker/health.py).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 CMD ["worker", "--check-health"]
CMD ["worker"]
