"""finetune-stack CDK stacks; reusable constructs live in ``stacks.components``."""

import sys
from pathlib import Path

# The stacks import the training container's standard-library modules (finetune.contract, finetune.metrics), as the
# container and the Validate asset do: ``finetune`` is a top-level package everywhere.
_TRAINING_CODE = str(Path(__file__).resolve().parents[1] / "training_code")
if _TRAINING_CODE not in sys.path:
    sys.path.insert(0, _TRAINING_CODE)
