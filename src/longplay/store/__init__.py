"""Persistence: the jobs table is what users see; nothing they need lives only in Redis."""
