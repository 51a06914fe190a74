"""finetune-stack CDK stacks; reusable constructs live in ``stacks.components``."""
