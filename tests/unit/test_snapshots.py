"""One snapshot per stack of the search-prod stage, for reviewing unintended template changes.

Update after an intended change with `make snapshot-update` and commit the diff with the change.
"""

from __future__ import annotations

import pytest
from syrupy.extensions.json import JSONSnapshotExtension

pytestmark = pytest.mark.synth

SNAPSHOT_STAGE = "search-prod"


def test_data_stack_snapshot(assembly, snapshot):
    assert assembly.stack(SNAPSHOT_STAGE, "Data").template == snapshot(extension_class=JSONSnapshotExtension)


def test_snapshot_covers_every_stack_of_the_stage(assembly):
    """A new stack in the stage needs its own snapshot test above."""
    assert sorted(name for stage, name in assembly.stacks if stage == SNAPSHOT_STAGE) == ["Data"]
