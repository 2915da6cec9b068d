# syntax=docker/dockerfile:1
# One image for every part of longplay: the API, a worker (CPU or GPU), beat and
# Flower are its commands (`docker run longplay worker --queues gpu`). deploy/compose.yaml
# runs them all on more than one machine.
#
#   docker build -t longplay .
#
# The first build takes about 8 minutes: llama-cpp-python has no Linux wheel on PyPI and
# compiles in the first stage; later builds reuse that stage until pyproject.toml or
# src/ change.

FROM python:3.11-slim AS wheels
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# llama.cpp for any x86-64 processor with AVX2, not only the one that builds the image
# (see the README's two commands).
ENV CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
# Every dependency as a wheel, so that the final image needs no compiler. basic-pitch
# without its dependencies, as the README installs it: longplay reads only its ONNX
# file, and its dependencies would pull TensorFlow in.
RUN pip wheel --no-cache-dir --wheel-dir /wheels . \
 && pip wheel --no-cache-dir --no-deps --wheel-dir /wheels basic-pitch==0.4.0


FROM python:3.11-slim
# libgomp1: the OpenMP runtime llama.cpp was compiled against.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels longplay \
 && pip install --no-cache-dir --no-index --no-deps /wheels/basic_pitch-*.whl
COPY --chmod=755 deploy/healthcheck.py /usr/local/bin/longplay-healthcheck

# Never root: a job runs decoders and models on files people upload.
RUN useradd --create-home --uid 10001 longplay \
 && mkdir /data \
 && chown longplay:longplay /data
USER longplay
# /data holds uploads, results and scratch space; every part must see the same one
# (a shared volume, NFS on more than one machine).
ENV LONGPLAY_DATA_DIR=/data \
    LONGPLAY_API_HOST=0.0.0.0 \
    PYTHONUNBUFFERED=1
VOLUME /data
EXPOSE 8000 5555

# The API's check; deploy/compose.yaml gives workers and Flower theirs
# (`longplay-healthcheck worker`, `longplay-healthcheck flower`).
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["longplay-healthcheck", "api"]
ENTRYPOINT ["longplay"]
CMD ["api"]
