"""Whole models converted and exported: the conversion command, Hugging Face folders, ONNX."""
