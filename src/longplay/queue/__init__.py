"""Celery: the app, the one task that runs a job by id, and beat's periodic upkeep."""
