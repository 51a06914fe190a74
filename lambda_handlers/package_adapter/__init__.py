"""The FineTune pipeline's PackageAdapter step: the LoRA adapter of a training job as the artifact LMI loads."""
