"""Benchmark harness for the implicit point convolution: ``python -m steerable.bench``.

Modules: :mod:`~steerable.bench.shapes` (shapes, synthetic inputs), :mod:`~steerable.bench.worker`
(one measurement per subprocess), :mod:`~steerable.bench.measure` (timing, peak memory),
:mod:`~steerable.bench.models` (whole-model throughput),
:mod:`~steerable.bench.report` (table, goals, memory slope, plot).
"""
