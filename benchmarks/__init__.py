"""The benchmark suite: freshcache against no cache, django-cacheops and django-cachalot.

``make bench`` runs :mod:`benchmarks.run` (the driver), which launches :mod:`benchmarks.worker`
once per library in that library's own virtualenv and writes ``docs/benchmarks.md``.
"""
