"""Every default of a run setting, in one place.

Commands, the Python API and the decision tools read their defaults from here, so that a
default changes once. The model default is the model layer's (:data:`zsim.model.DEFAULT_MODEL`),
re-exported here.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

from .model import DEFAULT_MODEL

#: Topology when none is given (predict, plan, sweep, capacity, report).
DEFAULT_TOPO = "dgx-a100"

#: Hardware profile that validate, diagnose and calibrate start from: the machine our
#: validation runs were measured on (predict and plan use the topology's own profile).
DEFAULT_PROFILE = "h200-sxm"

#: Topology of the validation runs (validate, diagnose, calibrate).
DEFAULT_RUN_TOPO = "hgx-h200"

#: How the job is started when the command line does not say (sets CPU threads per rank).
DEFAULT_LAUNCHER = "deepspeed"

#: The DeepSpeed config used when none is given: bf16 mixed precision, clipping 1.0.
#: Never modified in place (zsim.dsconfig deep-copies what it reads); take
#: :func:`default_ds_config` for a copy to change.
DEFAULT_DS_CONFIG: Mapping[str, Any] = {"bf16": {"enabled": True}, "gradient_clipping": 1.0}

#: Micro-batch per GPU when neither the config nor the command line gives one.
DEFAULT_MICRO_BATCH = 2

#: Sequence length when none is given (capped at the model's max_position_embeddings).
DEFAULT_SEQ_LEN = 2048

#: `zsim capacity` asks what fits at one sequence per GPU.
CAPACITY_MICRO_BATCH = 1


def default_ds_config() -> dict[str, Any]:
    """A fresh, mutable copy of :data:`DEFAULT_DS_CONFIG`."""
    return copy.deepcopy(dict(DEFAULT_DS_CONFIG))


__all__ = ["DEFAULT_MODEL", "DEFAULT_TOPO", "DEFAULT_PROFILE", "DEFAULT_RUN_TOPO", "DEFAULT_LAUNCHER",
           "DEFAULT_DS_CONFIG", "DEFAULT_MICRO_BATCH", "DEFAULT_SEQ_LEN", "CAPACITY_MICRO_BATCH",
           "default_ds_config"]
