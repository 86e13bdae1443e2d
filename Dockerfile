# syntax=docker/dockerfile:1
# token-vault's image: `docker build -t token-vault .`; compose.yaml runs it with PostgreSQL,
# docs/deploy.md says how. Configuration comes only from the environment and *_FILE secrets.
#
# tests/test_container.py runs this file's RUN, HEALTHCHECK, ENTRYPOINT and CMD in fresh
# virtual environments as an unprivileged user, with the image's paths mapped into a
# temporary directory. So: every path a command uses comes from an ENV variable, and the
# commands stay plain shell.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- builder: token-vault's wheel and the wheels of everything it needs -----------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    WHEELS=/wheels
WORKDIR /build
COPY pyproject.toml README.md LICENSE constraints.txt ./
COPY src/ src/
RUN python -m pip wheel --no-cache-dir --wheel-dir "$WHEELS" --constraint constraints.txt ".[service]"

# -- the image: Python, the service's wheels installed, no compilers, a non-root user -----
FROM ${PYTHON_IMAGE}
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    WHEELS=/wheels \
    VIRTUAL_ENV=/opt/token-vault
COPY --from=builder /wheels /wheels
RUN python -m venv "$VIRTUAL_ENV" \
    && "$VIRTUAL_ENV/bin/pip" install --no-cache-dir --no-index --find-links "$WHEELS" "oidc-token-vault[service]" \
    && rm -rf "$WHEELS"
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin token-vault
# An empty working directory the service cannot write: no .env file is read in the image.
WORKDIR /srv/token-vault
ENV PATH="$VIRTUAL_ENV/bin:$PATH" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TOKEN_VAULT_HOST=0.0.0.0 \
    TOKEN_VAULT_PORT=8000
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['TOKEN_VAULT_PORT'], timeout=4)"]
ENTRYPOINT ["token-vault"]
CMD ["serve"]
