"""A loopback Calpendo web-API simulator for demos, tests and benchmarks."""
