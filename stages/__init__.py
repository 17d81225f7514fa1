"""Thin click commands, one per DVC stage: parse paths and params, call :mod:`pipeline`."""
