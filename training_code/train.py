"""SageMaker entry point (SAGEMAKER_PROGRAM=train.py); also runs locally: ``python training_code/train.py --help``."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from finetune.entry import main

if __name__ == "__main__":
    sys.exit(main())
