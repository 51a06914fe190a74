"""Lambda functions of finetune-stack: one folder per function, each a thin handler over plain logic."""
