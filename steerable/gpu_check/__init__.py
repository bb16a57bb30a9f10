"""The one-command GPU check: ``python -m steerable.gpu_check`` (``make gpu-check``, ``tools/gpu_check.sh``).

Runs, each stage in its own subprocess under its own time limit, on one device: the machine's facts
and dense matmul rate, the ``cuda``-marked tests, the bench's ModelNet goal shapes and whole models,
a fixed-time N-body training and a ModelNet-40 training on generated clouds; writes
``report.json`` and ``report.md``. ``--device cpu --size tiny`` runs the same stages in about a
minute (``tests/test_gpu_check.py``).

Modules: :mod:`~steerable.gpu_check.stages` (commands and their parsers),
:mod:`~steerable.gpu_check.report` (summary and Markdown), :mod:`~steerable.gpu_check.machine`
(versions, device, matmul rate), :mod:`~steerable.gpu_check.train` (training runs without W&B, peak
memory), :mod:`~steerable.gpu_check.clouds` (synthetic ModelNet-40 in the HDF5 layout).
"""
