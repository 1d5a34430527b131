# syntax=docker/dockerfile:1
# One image for every fedfleet process: `fedfleet operator`, `fedfleet aggregator`, `fedfleet client`.
#
#   docker build -t ghcr.io/fedfleet/fedfleet:0.1.0 .                                    # CPU torch
#   docker build --build-arg TORCH_VARIANT=cu128 -t ghcr.io/fedfleet/fedfleet:0.1.0-cuda .  # CUDA torch
#
# TORCH_VARIANT picks the PyTorch wheel index (cpu, or a CUDA build such as cu126, cu128): the
# CUDA wheels carry their own CUDA runtime, so the base stays python-slim and a GPU node only
# needs its driver and device plugin. The charts' default image is IMAGE:VERSION below
# (tests/charts/test_image.py keeps them, pyproject's version and the operator's default equal).

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ARG TORCH_VARIANT=cpu
ARG EXTRAS=llm
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/fedfleet/bin:$PATH
# torch first, from the variant's index, so that no dependency pulls another build of it
RUN python -m venv /opt/fedfleet \
    && pip install --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" torch==2.13.0
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# the package itself, from this context; its dependencies are ranged in pyproject.toml
# hadolint ignore=DL3013
RUN pip install ".[${EXTRAS}]" \
    && find /opt/fedfleet -name '__pycache__' -type d -prune -exec rm -rf {} +

FROM python:${PYTHON_VERSION}-slim-bookworm
ARG VERSION=0.1.0
ARG IMAGE=ghcr.io/fedfleet/fedfleet
LABEL org.opencontainers.image.title="fedfleet" \
      org.opencontainers.image.description="Federated training fleets on Kubernetes: operator, aggregator and site client" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/fedfleet/fedfleet" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.fedfleet.image="${IMAGE}:${VERSION}"
RUN groupadd --system --gid 10001 fedfleet \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin fedfleet
COPY --from=build /opt/fedfleet /opt/fedfleet
ENV PATH=/opt/fedfleet/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
WORKDIR /tmp
# the uid the pods run as (runAsUser 10001 in the charts and in controller/resources.py)
USER 10001:10001
EXPOSE 50051 8080 9090
ENTRYPOINT ["fedfleet"]
CMD ["--help"]
