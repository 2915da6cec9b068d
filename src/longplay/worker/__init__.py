"""Celery tasks: each takes an id and calls the jobs layer; process signals."""
