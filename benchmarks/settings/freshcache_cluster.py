"""freshcache on the private Redis Cluster (three primaries), caching every op of the models.

The cluster is the test suite's (``scripts/services.sh``), named by
``FRESHCACHE_TEST_CLUSTER_URL``; a cluster has database 0 only, so this library owns the whole
cluster while it runs (the driver runs it only with ``--backend cluster``).
"""

from __future__ import annotations

import os

from benchmarks.settings.base import *  # noqa: F403
from benchmarks.settings.base import CACHE_TIMEOUT, INSTALLED_APPS

try:
    CLUSTER_URL = os.environ["FRESHCACHE_TEST_CLUSTER_URL"]
except KeyError:
    raise RuntimeError(
        "FRESHCACHE_TEST_CLUSTER_URL is not set: run `make bench BACKEND=cluster`, which starts "
        "the cluster, or `make services-shell` first"
    ) from None

INSTALLED_APPS = [*INSTALLED_APPS, "freshcache"]
FRESHCACHE_BACKEND = "cluster"
FRESHCACHE_CLUSTER = CLUSTER_URL
FRESHCACHE_DEFAULTS = {"timeout": CACHE_TIMEOUT}
FRESHCACHE = {"benchapp.*": {"ops": "all"}}
