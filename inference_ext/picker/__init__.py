"""The endpoint picker: model-server signals, the prefix-cache index, scoring, flow control."""
