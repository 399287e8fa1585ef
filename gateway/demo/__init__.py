"""The bundled demo: example config, echo backend, and the `ambient demo` tour."""
