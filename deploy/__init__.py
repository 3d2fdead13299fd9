"""Deployment tooling of coldstream (not part of the installed package).

* :mod:`deploy.generate` writes the derived files (Strimzi resources, the Kafka compose
  file, the PrometheusRule, the Grafana dashboard) from their single sources.
* :mod:`deploy.promql` extracts metric names from PromQL, for the checks that every
  dashboard and alert uses only exported metrics.
"""
