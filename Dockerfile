# emo-prep in a container: python:3.11-slim, the wheel built from this checkout (the face models
# travel inside it), a non-root user. `make image` builds it; `make image EXTRAS=ray` adds the
# Ray engine (for the nodes of a Ray cluster). The build needs the network (Debian and PyPI).
#
#   docker run --rm -v "$PWD/photos:/photos:ro" emo-prep check /photos
#   docker run --rm -e DASHSCOPE_API_KEY emo-prep task --list

FROM python:3.11-slim AS wheel
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

FROM python:3.11-slim
ARG EXTRAS=""
# OpenCV (the wheel mediapipe depends on) loads libGL and GLib when imported.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 emo
COPY --from=wheel /dist/ /tmp/dist/
RUN wheel="$(ls /tmp/dist/emo_prep-*.whl)" \
    && pip install --no-cache-dir "${wheel}${EXTRAS:+[$EXTRAS]}" \
    && rm -rf /tmp/dist
USER emo
WORKDIR /home/emo
ENTRYPOINT ["emo-prep"]
CMD ["--help"]
