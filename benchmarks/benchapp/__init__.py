"""The models every library is benchmarked on: the same tables, data and queries for all."""
