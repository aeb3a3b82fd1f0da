"""One adapter per model family: the wiring ``LengthAdaptiveQA`` needs to run a family's layers
token by token, and the exact FLOPs of that wiring.

A family is supported by writing one module here (an adapter with the small interface of
:class:`bench.families.base.FamilyAdapter`) and registering it in ``bench.adaptive.ADAPTERS``.
"""
