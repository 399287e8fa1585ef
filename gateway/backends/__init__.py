"""Backend kinds: how a backendRef turns into something the data path can send a request to."""
