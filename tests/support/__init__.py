"""Test support: the loopback Hub-protocol server, its pytest plugin, and raw-source fixture writers."""
