# One image: nginx (Debian's, with auth_request) in front, gunicorn + the app
# behind it, `lfs-server serve` as PID 1 supervising both.
#
# Build (BuildKit; the CA secret is optional, for TLS-intercepting proxies):
#   DOCKER_BUILDKIT=1 docker build -t lfs-server .
#   DOCKER_BUILDKIT=1 docker build --secret id=ca,src=/path/to/extra-ca.pem -t lfs-server .
# No registry? docker/build-base-image.sh makes debian:bookworm-slim locally.
# Run:
#   docker run -d --name lfs --env-file env.list -v lfs-data:/data -p 8080:8080 lfs-server

# ---- build stage: the virtualenv (pip and its caches never reach the final image)
FROM debian:bookworm-slim AS build

RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/lfs-server

COPY docker/pip-install.sh /usr/local/bin/pip-install

# Dependencies first (their own cached layer), read from pyproject.toml.
COPY pyproject.toml /src/pyproject.toml
RUN --mount=type=secret,id=ca,required=false \
    python3 -c "import tomllib; print('\n'.join(tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['dependencies']))" \
      >/tmp/requirements.txt \
 && sh /usr/local/bin/pip-install -r /tmp/requirements.txt

# The app itself (non-editable), then drop pip/setuptools from the venv.
COPY . /src
RUN --mount=type=secret,id=ca,required=false \
    sh /usr/local/bin/pip-install /src \
 && /opt/lfs-server/bin/python -m pip uninstall -y -q pip setuptools \
 && /opt/lfs-server/bin/lfs-server --help >/dev/null

# ---- runtime stage
FROM debian:bookworm-slim

ARG LFS_UID=10001
ARG LFS_GID=10001

# nginx from Debian (auth_request is built in); python3 for the venv. No
# compilers, no recommends, no apt lists or logs left behind. One user runs
# nginx (master and workers) and gunicorn, so uploads can be linked into place.
RUN apt-get update \
 && apt-get install -y --no-install-recommends nginx python3 \
 && rm -rf /var/lib/apt/lists/* /var/log/apt/* /var/log/dpkg.log /var/cache/debconf/*-old \
 && groupadd --system --gid "$LFS_GID" lfs \
 && useradd --system --uid "$LFS_UID" --gid "$LFS_GID" --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin lfs \
 && install -d -o "$LFS_UID" -g "$LFS_GID" -m 0700 /data

COPY --from=build /opt/lfs-server /opt/lfs-server
COPY docker/healthcheck.py /opt/lfs-server/healthcheck.py

# nginx needs neither /var/lib/nginx nor /var/log/nginx: the launcher renders
# its config into a fresh temp dir (pid, proxy temp files), puts upload temp
# files under /data/tmp and runs nginx with -p <that dir> -e stderr.
ENV PATH=/opt/lfs-server/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LFS_DATA_DIR=/data \
    LFS_LISTEN=0.0.0.0:8080

VOLUME /data
EXPOSE 8080
USER ${LFS_UID}:${LFS_GID}
WORKDIR /data

# Follows LFS_LISTEN and LFS_TLS_CERT (http or https) at run time.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["/opt/lfs-server/bin/python", "/opt/lfs-server/healthcheck.py"]

# PID 1 is the launcher: it reaps children and stops gracefully on SIGTERM,
# letting uploads in flight finish for up to LFS_STOP_GRACE (60 s). Docker
# kills after 10 s by default: stop with `docker stop -t 70`, or run with
# `--stop-timeout 70`. Other commands: `docker run IMAGE check-config`,
# `docker exec CONTAINER lfs-server ...`.
ENTRYPOINT ["/opt/lfs-server/bin/lfs-server"]
CMD ["serve"]
