"""One snapshot per stack of the search-dev stage, for reviewing unintended template changes.

Update after an intended change with `make snapshot-update` and commit the diff with the change.
"""

from __future__ import annotations

import pytest
from syrupy.extensions.json import JSONSnapshotExtension

pytestmark = pytest.mark.synth

SNAPSHOT_STAGE = "search-dev"  # the example stage with every layer


SNAPSHOT_STACKS = sorted(["Data", "Training", "Inference", "Hosts", "Monitoring"])


@pytest.mark.parametrize("stack_name", SNAPSHOT_STACKS)
def test_stack_snapshot(assembly, snapshot, stack_name):
    assert assembly.stack(SNAPSHOT_STAGE, stack_name).template == snapshot(extension_class=JSONSnapshotExtension)


def test_snapshot_covers_every_stack_of_the_stage(assembly):
    """A new stack in the stage needs its entry in SNAPSHOT_STACKS."""
    assert sorted(name for stage, name in assembly.stacks if stage == SNAPSHOT_STAGE) == SNAPSHOT_STACKS
