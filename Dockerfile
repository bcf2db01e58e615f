# The mailticket image used by docker-compose.yml (worker, migrations, API).
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
COPY pyproject.toml README.md alembic.ini ./
COPY src ./src
COPY migrations ./migrations
COPY templates ./templates
# Editable: migrations/ and templates/ are found next to the package, as in a checkout.
RUN pip install -e . && useradd --system --home /app mailticket
USER mailticket
CMD ["mailticket", "run"]
