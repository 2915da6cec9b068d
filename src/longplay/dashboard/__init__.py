"""The web dashboard: server-rendered pages over the same service the JSON API calls.

People sign in with an API key; the browser then holds an opaque session cookie
(HttpOnly, SameSite=Strict), never the key. Pages are Jinja2 templates with
autoescape on; one small script of our own moves progress bars and the event log by
Server-Sent Events. Every asset ships with the package: nothing loads from a CDN.

:func:`longplay.dashboard.app.mount` adds it to the API's FastAPI app.
"""
