"""ssl-bench: a benchmark suite for semi-supervised medical image segmentation.

Public entry points: :mod:`ssl_bench.registry` (plugins), :mod:`ssl_bench.metrics` (metric suite),
:mod:`ssl_bench.runner` (runs), and the ``ssl-bench`` command (:mod:`ssl_bench.cli`).
"""

__version__ = "0.1.0"
