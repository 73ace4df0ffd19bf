"""One Django settings module per library; ``base`` holds what they share.

Connection details come from the environment the driver sets for each worker:
``BENCH_PG_HOST``/``BENCH_PG_PORT``/``BENCH_PG_USER``/``BENCH_DB_NAME`` and ``BENCH_REDIS_URL``
(the library's own Redis database number); ``freshcache_cluster`` reads the cluster's address
from ``FRESHCACHE_TEST_CLUSTER_URL``.
"""
