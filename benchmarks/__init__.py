"""Benchmarks of Conveyor against raw Celery and the raw S3 clients: ``make bench``.

They measure and print (and write ``benchmarks/results.md``); they assert nothing beyond
sanity. See ``__main__.py`` for the run, ``overhead.py`` and ``artifact.py`` for what each
side of each comparison does.
"""
