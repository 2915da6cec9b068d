"""The jobs layer: the service the API and the CLI call, the runner the worker calls,
and what both share: lifecycle, progress, units of work and their hooks, admission,
webhooks, cleanup. It reaches Celery only through :mod:`longplay.broker.send`."""
