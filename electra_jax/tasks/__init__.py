"""Fine-tuning tasks: GLUE and user data readers, metrics, features, noise.

- `glue`: the GLUE task registry (`get_task`) and readers for the standard
  `download_glue_data.py` directory layout (`read_split`) and tfds `glue/*`
  (`read_tfds_split`).
- `custom`: the user's own CSV / TSV / JSONL files, label maps, class weights.
- `metrics`: GLUE metrics in numpy, the GLUE scores, leaderboard files.
- `features`: examples -> fixed-shape numpy arrays with a tokenizer.
- `augment`: train-time noise on token id arrays.

Everything here is pure Python/numpy: no jax, no model.
"""
