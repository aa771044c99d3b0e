"""Engines: one small protocol (`base.Engine`) and its implementations."""
