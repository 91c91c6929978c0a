# The Traversion application image: web (gunicorn + uvicorn workers), Celery worker and
# beat, and the one-shot setup all run from it (docker-compose.yml picks the command).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=traversion_site.settings \
    TRAVERSION_VAR_DIR=/app/var

WORKDIR /app

# Dependencies first, so that a code change does not reinstall them.
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .

# Static files are collected at build time (whitenoise serves them); the secret is a
# build-only placeholder, the real one comes from the environment at run time.
RUN SECRET_KEY=collectstatic-build-only python manage.py collectstatic --noinput \
    && useradd --system --create-home --uid 10001 --user-group traversion \
    && mkdir -p /app/var \
    && chown -R traversion:traversion /app/var

USER traversion

EXPOSE 8000 9808

CMD ["gunicorn", "--config", "traversion_site/gunicorn.conf.py", \
     "--worker-class", "uvicorn_worker.UvicornWorker", \
     "--bind", "0.0.0.0:8000", "traversion_site.asgi:application"]
