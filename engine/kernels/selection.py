"""The native kernels as accelerated implementations of significance policies.

Each registers for the policy whose choice it computes exactly (``register_accelerated``), so the
forward asks the registry for the policy it runs and never names one:

* ``attention``: the drop-attention kernel computes attention received, the kept slots and only
  the kept rows' context in one call;
* ``lookahead``: the probe-select kernel finishes the probe from its first map's columns of the
  layer's projection (exact GELU, output map, start/end softmaxes) and picks the slots.

Both protect leading slots: a kept question leads every row and kept slots stay in position order,
so keeping it is protecting each example's first ``protected`` slots.
"""

from __future__ import annotations

import torch

from dynlen.engine.significance import DropJob, register_accelerated


class DropAttention:
    """Attention received, selection and the kept rows' context in one native call."""

    def drop(self, kernels, job: DropJob) -> tuple[torch.Tensor, torch.Tensor]:
        return kernels.drop_attention(
            job.query, job.key, job.value, job.current, job.counts, job.protected, job.scaling
        )


class ProbeSelect:
    """The look-ahead probe's score and the top slots in one native call; the engine attends the kept queries."""

    def drop(self, kernels, job: DropJob) -> tuple[None, torch.Tensor] | None:
        output_map = job.probes.output_map(job.layer) if job.probe_inputs else None
        if output_map is None:  # a linear probe, or one the projection did not run: torch's ops
            return None
        slots = kernels.probe_select(
            job.probe_inputs[0], output_map.weight, output_map.bias, job.current, job.counts, job.protected
        )
        return None, slots


register_accelerated("attention", DropAttention())
register_accelerated("lookahead", ProbeSelect())
