"""The live daemon: a pure decode engine (messages in, decodes and counters out) behind a thin ZeroMQ shell."""
