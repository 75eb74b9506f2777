# The gapmodel HTTP service: `gapmodel serve` over the registry in /data (a volume).
FROM python:3.12-slim

# g++: PyTensor compiles the model's C code when fits run (fit jobs, the CLI). Debian's
# current package of the base image's release (not pinned, so security fixes apply).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY gapmodel ./gapmodel
COPY api ./api
# with dask.distributed, so that the image also serves as a Dask scheduler and fit worker
RUN pip install ".[cluster]"

# Model specs (models/*.yaml) are the service's named specs; fitted versions, the SQLite
# database (when DATABASE_URL is not set), uploaded datasets and the compiled model
# functions (kept across restarts, in a folder per compiler version:
# gapmodel/compile_cache.py) live under /data.
COPY models/*.yaml ./models/
ENV GAPMODEL_REGISTRY=/data/registry \
    GAPMODEL_DATASETS_DIR=/data/datasets \
    DATABASE_URL=sqlite:////data/gapmodel.db \
    GAPMODEL_COMPILE_CACHE=/data/compiled
# Each spec compiled on a stand-in of its data (made-up values in the same layout, no
# files needed): a first fit of the real data finds most of its operations compiled
# (England by PCN: 16 s of compilation left of 53; docs/performance.md, "England's first
# fit in a new image"). Compiled outside the volume, whose contents outlive the image:
# each process copies in what the volume's cache lacks (GAPMODEL_COMPILE_SEED,
# gapmodel/compile_cache.py). Compiled for the build machine's processor: on another,
# numba compiles afresh.
RUN for spec in models/*.yaml; do \
      GAPMODEL_COMPILE_CACHE=/opt/gapmodel/compiled gapmodel compile "$spec" --stand-in \
      || exit 1; \
    done
ENV GAPMODEL_COMPILE_SEED=/opt/gapmodel/compiled
RUN groupadd --gid 10001 gapmodel \
    && useradd --create-home --uid 10001 --gid 10001 gapmodel \
    && mkdir -p /data/registry /data/datasets /data/compiled \
    && chown -R gapmodel:gapmodel /data
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]

CMD ["gapmodel", "serve", "--host", "0.0.0.0", "--port", "8000"]
