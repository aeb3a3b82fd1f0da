"""The length-adaptive engine: a configuration (:mod:`.config`), the Drop-and-Restore forward
(:mod:`.adaptive`), which tokens a layer keeps (:mod:`.significance`, :mod:`.probes`), what it costs
(:mod:`.costs`), per-family layer access (:mod:`.families`) and native kernels (:mod:`.kernels`).
It imports nothing else of dynlen but :mod:`dynlen.errors`."""
