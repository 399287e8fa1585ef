"""Metrics (Istio names), OpenTelemetry traces and the access log for the data path."""
