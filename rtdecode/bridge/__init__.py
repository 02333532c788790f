"""Bridges between the daemon's ZeroMQ protocol and the acquisition software of a rig (LSL)."""
