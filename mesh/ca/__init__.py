"""The mesh CA: root/intermediate storage and an Istio-compatible CreateCertificate gRPC service."""
