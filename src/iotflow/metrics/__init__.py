"""Prometheus metrics: the registry (:mod:`.registry`), the request counter (:mod:`.middleware`) and
``GET /metrics`` (:mod:`.endpoints`)."""
