"""The lab console: a live web page over a campaign's ledger (``selflab console``).

It reads the ledger only (as ``selflab status`` does: no writer lock, so it
never slows a campaign nor causes "database is locked"), on SQLite and on
Postgres, and keeps every open page live through server-sent events. Writing
(stop, emergency stop; approval, veto and the other human actions are hooks
in :mod:`~selflab.controller.console.actions`) needs the write token.

Parts, each with one job:

* :mod:`~selflab.controller.console.source`: the read-only ledger, campaigns cached by position;
* :mod:`~selflab.controller.console.live`: polls the ledger's position, tells the pages;
* :mod:`~selflab.controller.console.views`: what each page shows, as data;
* :mod:`~selflab.controller.console.figures`: ``selflab report``'s figures for the web, cached;
* :mod:`~selflab.controller.console.security`: token, sessions, CSRF, bind address;
* :mod:`~selflab.controller.console.actions`: the write actions and their registry;
* :mod:`~selflab.controller.console.app`: the Starlette app (pages, stream, actions);
* :mod:`~selflab.controller.console.server`: uvicorn, in the foreground or on a thread.

Its web dependencies are the ``console`` extra: ``pip install 'selflab[console]'``.
"""
