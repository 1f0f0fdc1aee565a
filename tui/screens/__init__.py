"""Screens pushed over the monitor: a batch's detail, the key help, a confirmation."""
