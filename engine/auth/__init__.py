"""Who is calling: SigV4 verification (:mod:`.sigv4`), principals and their roles
(:mod:`.principals`), and the request's identity while it is served (:mod:`.context`)."""
