"""The one exception type users see for bad input.

Anything raised as `ElectraError` is printed by the CLI as a single line
(`electra-jax: error: ...`) with no traceback: its message must say what is
wrong and what to do about it.
"""


class ElectraError(Exception):
  """A user-facing error: bad path, bad config, mismatched checkpoint, ..."""
