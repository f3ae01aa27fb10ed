# Transformer designer: Streamlit app + backend CLI, CPU-only PyTorch.
#
#   docker build -t transformer-designer .
#   docker run -p 8501:8501 -v designer-data:/data transformer-designer
#
# See docs/DOCKER.md (team server with compose, PostgreSQL, password, offline builds).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# CPU wheels of torch come from PyTorch's own index: PyPI's linux torch is the
# multi-GB CUDA build. Override the index for a mirror; TORCH_EXTRA_INDEX_URL
# (empty by default) serves torch's own dependencies when the mirror has only
# torch (scripts/docker-local-test.sh).
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_EXTRA_INDEX_URL=

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BACKEND_DATA_DIR=/data \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false \
    STREAMLIT_SERVER_HEADLESS=true

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# graphviz: the `dot` binary renders architecture diagrams.
RUN apt-get update \
    && apt-get install -y --no-install-recommends graphviz \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# torch first and alone (pinned, CPU index), then the pinned requirements:
# requirements.txt repeats torch==${TORCH_VERSION}, which is then already satisfied.
RUN PIP_EXTRA_INDEX_URL="${TORCH_EXTRA_INDEX_URL}" pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
COPY requirements.txt ./
RUN pip install -r requirements.txt \
    && python -c "import torch; assert torch.__version__.startswith('${TORCH_VERSION}'), torch.__version__"

COPY backend/ backend/
COPY app/ app/
COPY presets/ presets/
COPY pyproject.toml ./

# Non-root user owning only the data volume and the exports folder.
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin designer \
    && mkdir -p /data /app/exports \
    && chown designer:designer /data /app/exports
USER 10001:10001

VOLUME /data
EXPOSE 8501

HEALTHCHECK --interval=30s --timeout=5s --start-period=40s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4).status == 200 else 1)"]

CMD ["streamlit", "run", "app/main.py", "--server.address=0.0.0.0", "--server.port=8501", "--server.headless=true"]
