"""vlm-parity: parity harness for vision-language-model inference engines."""

__version__ = "0.1.0"
