"""Pretraining input pipeline: text sources -> packed examples -> batches.

  sources.py            local text files (plain / WikiText) and tfds datasets
  pretraining_data.py   the official ELECTRA example builder
  prepare.py            `prepare_pretraining_data`: sharded array_record + manifest
  loader.py             `PretrainingDataset`: grain loader with resumable state

Submodules are imported on demand (the tokenizer and grain are not cheap).
"""
