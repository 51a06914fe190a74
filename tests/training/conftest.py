"""The training tests' helpers live in harness.py; the shared session runs (classification_run, causal_run,
minilm_dir, smollm2_dir) are in tests/conftest.py so the end-to-end tests reuse the same trained models."""

from .harness import (  # noqa: F401  (re-exported for the tests of this folder)
    CAUSAL_ARGS,
    CLASSIFICATION_ARGS,
    REPO,
    SAMPLES,
    SHARED_DATA,
    TRAIN_PY,
    Run,
    child_env,
    dirs_args,
    run_train,
)
