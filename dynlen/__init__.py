"""dynlen: length-adaptive inference, search and reporting for BERT-family extractive QA.

One import name over the project's folders (``pyproject.toml`` maps them), in the order data flows:
``dynlen.engine`` (configuration, Drop-and-Restore forward, significance, probes, costs, families,
kernels) -> ``dynlen.bench`` (SQuAD evaluator, latency, serving) -> ``dynlen.training`` and
``dynlen.search`` -> ``dynlen.reports`` -> ``dynlen.cli``.
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _installed_version

try:
    __version__: str = _installed_version("dynlen")
except PackageNotFoundError:  # a checkout used without `pip install -e .`
    __version__ = "0+unknown"
