"""Sampling algorithms (docs/protocol.md §6), one file per algorithm; shared helpers in ``base.py``.

Samplers are frozen dataclasses looked up by name through ``pfbench.registry.SAMPLERS``.
"""
