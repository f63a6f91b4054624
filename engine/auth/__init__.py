"""Who is calling: SigV4 verification (:mod:`.sigv4`), principals and their roles
(:mod:`.principals`), their access keys and the principals file (:mod:`.keys`), replayed
requests (:mod:`.replay`), authorization in AWS's words (:mod:`.access`), and the request's
identity while it is served (:mod:`.context`). The HTTP edge is :mod:`engine.api.auth`."""
