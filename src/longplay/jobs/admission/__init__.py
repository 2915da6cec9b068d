"""Admission: which queued jobs go to the broker, and when.

longplay keeps the broker shallow. A queued job whose ``dispatched_at`` is null is
held in the store: scheduled for later (``run_at``), waiting for its retry
(``retry_at``), or behind other owners' fair share. The modules here, by concern:

- ``limits``: an owner's limits (its own, its tier's, the settings') and the checks
  at submit: the queued cap and the submit rate (GCRA in Redis).
- ``choice``: which held, due jobs go next: priority, then the owner with the fewest
  jobs in flight (running or handed over), then age; never past ``max_running``.
- ``pump``: hands what ``choice`` picks to the broker, at most ``dispatch_ahead`` per
  resource beyond the ones running; one process at a time (a Redis lock), and one
  that finds the lock taken leaves a flag, so no wake-up is lost. What frees a
  worker slot or queues a job pumps: a submit, a claim, the end of a job, a worker
  starting. It also books delayed rounds for the next ``run_at``, retry or deadline.
- ``rounds``: the round beat runs every ``dispatch_interval``: ends queued jobs whose
  deadline passed, cancels running ones past theirs, hands over again jobs whose
  message was lost with the broker, pumps.
- ``position``: where queued jobs stand, for a page of them in a few queries.
"""
