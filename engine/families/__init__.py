"""One adapter per model family: the wiring ``LengthAdaptiveQA`` needs to run a family's layers
token by token, and the exact FLOPs of that wiring.

A family is supported by writing one module here (an adapter with the small interface of
:class:`dynlen.engine.families.base.FamilyAdapter`) and registering it in :data:`ADAPTERS`
below, the one list of supported families.
"""

from __future__ import annotations

from torch import nn

from dynlen.engine.families.base import FamilyAdapter
from dynlen.engine.families.bert import BertLayoutAdapter
from dynlen.engine.families.distilbert import DistilBertAdapter
from dynlen.engine.families.mobilebert import MobileBertAdapter
from dynlen.errors import UserError

ADAPTERS: dict[str, type] = {
    "bert": BertLayoutAdapter,  # also BORT, whose checkpoints are model_type "bert"
    "roberta": BertLayoutAdapter,
    "distilbert": DistilBertAdapter,
    "mobilebert": MobileBertAdapter,
}


def adapter_for(model: nn.Module, kernels: bool = True) -> FamilyAdapter:
    """The adapter of ``model``'s family; a UserError naming the supported ones otherwise."""
    model_type = getattr(model.config, "model_type", None)
    if model_type not in ADAPTERS or not hasattr(model, "qa_outputs"):
        raise UserError(
            f"unsupported architecture {type(model).__name__} (model_type={model_type!r}); "
            f"supported: {', '.join(sorted(ADAPTERS))} *ForQuestionAnswering models"
        )
    return ADAPTERS[model_type](model, kernels=kernels)
