# The mailticket image used by docker-compose.yml (worker, migrations, API).
# Built as a wheel and installed like any user would install it: the image holds the
# installed package only (migrations and templates inside it), no source checkout.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# src/mailticket/_data/ links to these two; the wheel takes copies.
COPY migrations ./migrations
COPY templates ./templates
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
COPY --from=build /wheels /wheels
RUN pip install /wheels/*.whl && rm -rf /wheels \
    && useradd --system --create-home --home-dir /app mailticket
WORKDIR /app
USER mailticket
CMD ["mailticket", "run"]
