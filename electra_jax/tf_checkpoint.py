"""TensorFlow checkpoints (the V2 tensor-bundle format) read and written without TensorFlow.

A checkpoint `PREFIX` that `tf.train.Saver` / `tf.train.Checkpoint` writes is
  - `PREFIX.index`: an SSTable (the LevelDB table format) whose keys are the
    variable names and whose values are `BundleEntryProto`s (dtype, shape,
    shard, offset, size, masked CRC32C); the key "" holds a
    `BundleHeaderProto` (number of shards, endianness, format version);
  - `PREFIX.data-SSSSS-of-NNNNN`: the tensors' raw little-endian bytes, each
    entry at its offset.

That is all the official ELECTRA checkpoints need, so they are read here with
numpy alone (TensorFlow is a ~500 MB install for a few hundred lines of
format). Every block of the index and every tensor is checked against its
CRC32C, as TensorFlow does. Not supported, with an error naming the variable
when it is read: string and variant tensors, partitioned (sliced) variables,
big-endian bundles, compressed index blocks (TensorFlow never writes those).

`write_checkpoint` writes the same format (one shard, uncompressed), so tests
can make checkpoints with any variable names; TensorFlow reads what it writes
(`tests/data/make_tf_checkpoint.py` checks both directions).

The format, from TensorFlow's `core/util/tensor_bundle/tensor_bundle.{h,cc}`,
`core/protobuf/tensor_bundle.proto` and `core/lib/io/{format,block,table}.cc`:
  table  = data blocks, a metaindex block, an index block, a 48-byte footer
           (metaindex and index BlockHandles as varints, zero padding to 40
           bytes, the magic 0xdb4775248b80fb57 as fixed64);
  block  = entries (varint shared key length, varint unshared length, varint
           value length, the unshared key bytes, the value), a uint32 restart
           offset array and its uint32 length; on disk followed by a type byte
           (0 = uncompressed) and the masked CRC32C of contents + type byte;
  index  = an entry per data block: key >= the block's last key, value the
           block's BlockHandle (varint offset, varint size).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Mapping
from typing import NamedTuple

import numpy as np

from electra_jax.errors import ElectraError

INDEX_SUFFIX = ".index"
_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_LEN = 48
_BLOCK_TRAILER_LEN = 5  # type byte + masked crc32c

# TensorFlow DataType enum (types.proto) -> numpy dtype, for the types with raw bytes.
_DTYPES = {
  1: np.dtype("<f4"),  # DT_FLOAT
  2: np.dtype("<f8"),  # DT_DOUBLE
  3: np.dtype("<i4"),  # DT_INT32
  4: np.dtype("u1"),  # DT_UINT8
  5: np.dtype("<i2"),  # DT_INT16
  6: np.dtype("i1"),  # DT_INT8
  9: np.dtype("<i8"),  # DT_INT64
  10: np.dtype("?"),  # DT_BOOL
  17: np.dtype("<u2"),  # DT_UINT16
  19: np.dtype("<f2"),  # DT_HALF
  22: np.dtype("<u4"),  # DT_UINT32
  23: np.dtype("<u8"),  # DT_UINT64
}
_BFLOAT16 = 14
_DTYPE_NAMES = {7: "string", 8: "complex64", 14: "bfloat16", 18: "complex128", 21: "variant"}
_TF_DTYPE = {dtype: code for code, dtype in _DTYPES.items()}


def _bfloat16():
  import ml_dtypes  # a dependency of jax

  return np.dtype(ml_dtypes.bfloat16)


# -- CRC32C (Castagnoli), as TensorFlow masks it -----------------------------------


def _crc_table() -> np.ndarray:
  table = np.arange(256, dtype=np.uint32)
  for _ in range(8):
    table = np.where(table & 1, (table >> 1) ^ np.uint32(0x82F63B78), table >> 1)
  return table.astype(np.uint32)


_CRC_TABLE = _crc_table()
_CRC_TABLE_LIST = [int(x) for x in _CRC_TABLE]
_LANES = 4096  # parallel CRC lanes for long inputs


def _crc_bytes(crc: int, data: bytes) -> int:
  """Extends the raw CRC register `crc` by `data` (a plain loop: for short inputs)."""
  table = _CRC_TABLE_LIST
  for byte in data:
    crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc


def _crc_lanes(states: np.ndarray, columns: np.ndarray) -> np.ndarray:
  """Runs len(states) CRC registers side by side over `columns` ([steps, lanes] bytes)."""
  table = _CRC_TABLE
  for column in columns:
    states = table[(states ^ column) & 0xFF] ^ (states >> 8)
  return states


def crc32c(data) -> int:
  """The CRC32C of `data` (bytes-like).

  Long inputs run as `_LANES` independent CRCs over equal chunks, vectorised
  with numpy, then combined: CRC(A + B) = shift_|B|(CRC(A)) ^ CRC(B), where
  shift_n (n zero bytes through the register) is linear over GF(2) and so a
  32x32 bit matrix, found by running the 32 unit vectors through n zeros.
  """
  buf = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
  n = len(buf)
  if n < 64 * _LANES:
    return _crc_bytes(0xFFFFFFFF, buf.tobytes()) ^ 0xFFFFFFFF
  chunk = n // _LANES
  body = np.ascontiguousarray(buf[: chunk * _LANES].reshape(_LANES, chunk).T)
  lane_crcs = _crc_lanes(np.full(_LANES, 0xFFFFFFFF, np.uint32), body) ^ np.uint32(0xFFFFFFFF)
  units = np.array([1 << b for b in range(32)], dtype=np.uint32)
  shift = [int(x) for x in _crc_lanes(units, np.zeros((chunk, 32), np.uint8))]
  crc = 0
  for lane_crc in lane_crcs.tolist():
    shifted = 0
    bit = 0
    while crc:
      if crc & 1:
        shifted ^= shift[bit]
      crc >>= 1
      bit += 1
    crc = shifted ^ lane_crc
  tail = buf[chunk * _LANES :].tobytes()
  return _crc_bytes(crc ^ 0xFFFFFFFF, tail) ^ 0xFFFFFFFF


def masked_crc32c(data) -> int:
  """TensorFlow's stored form of a CRC32C (`crc32c::Mask`)."""
  crc = crc32c(data)
  return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


# -- protobuf wire format (the three small messages the index holds) ---------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
  result = shift = 0
  while True:
    if pos >= len(buf):
      raise ValueError("truncated varint")
    byte = buf[pos]
    pos += 1
    result |= (byte & 0x7F) << shift
    if not byte & 0x80:
      return result, pos
    shift += 7
    if shift > 63:
      raise ValueError("varint too long")


def _fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
  """(field number, value) of a serialised message; ints for varint/fixed, bytes for length-delimited."""
  pos = 0
  while pos < len(buf):
    key, pos = _varint(buf, pos)
    number, wire = key >> 3, key & 7
    if wire == 0:
      value, pos = _varint(buf, pos)
    elif wire == 1:
      value, pos = int.from_bytes(buf[pos : pos + 8], "little"), pos + 8
    elif wire == 2:
      size, pos = _varint(buf, pos)
      value, pos = bytes(buf[pos : pos + size]), pos + size
    elif wire == 5:
      value, pos = int.from_bytes(buf[pos : pos + 4], "little"), pos + 4
    else:
      raise ValueError(f"unsupported protobuf wire type {wire}")
    if pos > len(buf):
      raise ValueError("truncated protobuf field")
    yield number, value


def _put_varint(value: int) -> bytes:
  out = bytearray()
  while True:
    byte = value & 0x7F
    value >>= 7
    if value:
      out.append(byte | 0x80)
    else:
      out.append(byte)
      return bytes(out)


def _put_field(number: int, value: int | bytes) -> bytes:
  if isinstance(value, bytes):
    return _put_varint(number << 3 | 2) + _put_varint(len(value)) + value
  return _put_varint(number << 3) + _put_varint(value)


class Entry(NamedTuple):
  """One variable of a checkpoint, as its `BundleEntryProto` describes it."""

  name: str
  dtype: int  # TensorFlow DataType enum
  shape: tuple[int, ...]
  shard_id: int
  offset: int
  size: int
  crc32c: int | None  # masked, as stored
  sliced: bool  # a partitioned variable, stored as slices

  @property
  def dtype_name(self) -> str:
    if self.dtype in _DTYPES:
      return {"?": "bool"}.get(_DTYPES[self.dtype].char, _DTYPES[self.dtype].name)
    return _DTYPE_NAMES.get(self.dtype, f"dtype {self.dtype}")


def _parse_entry(name: str, value: bytes) -> Entry:
  fields = {"dtype": 0, "shard_id": 0, "offset": 0, "size": 0, "crc32c": None}
  shape: list[int] = []
  sliced = False
  for number, v in _fields(value):
    if number == 1:
      fields["dtype"] = v
    elif number == 2:  # TensorShapeProto: repeated Dim dim = 2 {int64 size = 1}
      for dim_number, dim in _fields(v):
        if dim_number == 2:
          size = next((s for n, s in _fields(dim) if n == 1), 0)
          shape.append(size - (1 << 64) if size >= 1 << 63 else size)
        elif dim_number == 3 and dim:
          raise ValueError("unknown rank")
    elif number == 3:
      fields["shard_id"] = v
    elif number == 4:
      fields["offset"] = v
    elif number == 5:
      fields["size"] = v
    elif number == 6:
      fields["crc32c"] = v
    elif number == 7:
      sliced = True
  if any(d < 0 for d in shape):
    raise ValueError(f"shape {shape} has an unknown dimension")
  return Entry(name, shape=tuple(shape), sliced=sliced, **fields)


# -- the SSTable -------------------------------------------------------------------


def _block_handle(buf: bytes, pos: int) -> tuple[int, int, int]:
  offset, pos = _varint(buf, pos)
  size, pos = _varint(buf, pos)
  return offset, size, pos


def _read_block(data: bytes, offset: int, size: int) -> bytes:
  end = offset + size + _BLOCK_TRAILER_LEN
  if offset < 0 or end > len(data):
    raise ValueError(f"block at {offset} (+{size}) runs past the end of the file")
  contents = data[offset : offset + size]
  kind = data[offset + size]
  (stored,) = struct.unpack_from("<I", data, offset + size + 1)
  if masked_crc32c(data[offset : offset + size + 1]) != stored:
    raise ValueError(f"checksum mismatch in the block at offset {offset}")
  if kind != 0:
    raise ValueError(
      f"block at offset {offset} is compressed (type {kind}); TensorFlow never writes those"
    )
  return contents


def _block_entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
  if len(block) < 4:
    raise ValueError("block too short")
  (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
  limit = len(block) - 4 - 4 * num_restarts
  if limit < 0:
    raise ValueError("bad restart array")
  pos, key = 0, b""
  while pos < limit:
    shared, pos = _varint(block, pos)
    unshared, pos = _varint(block, pos)
    value_len, pos = _varint(block, pos)
    if shared > len(key) or pos + unshared + value_len > limit:
      raise ValueError("corrupt block entry")
    key = key[:shared] + block[pos : pos + unshared]
    pos += unshared
    yield key, block[pos : pos + value_len]
    pos += value_len


def _table_entries(data: bytes) -> Iterator[tuple[bytes, bytes]]:
  if len(data) < _FOOTER_LEN:
    raise ValueError("file too short for a table footer")
  footer = data[-_FOOTER_LEN:]
  if int.from_bytes(footer[-8:], "little") != _TABLE_MAGIC:
    raise ValueError("no SSTable magic number at the end")
  _, _, pos = _block_handle(footer, 0)  # metaindex: TensorFlow writes none of use
  index_offset, index_size, _ = _block_handle(footer, pos)
  for _, handle in _block_entries(_read_block(data, index_offset, index_size)):
    offset, size, _ = _block_handle(handle, 0)
    yield from _block_entries(_read_block(data, offset, size))


# -- checkpoints -------------------------------------------------------------------


def resolve_prefix(path: str | os.PathLike) -> str:
  """The checkpoint prefix that `path` names.

  Accepts the prefix itself (`dir/model.ckpt-1000000`), its `.index` file, or
  a directory: the checkpoint its `checkpoint` state file names
  (`model_checkpoint_path`), else its only `*.index`.
  """
  path = os.fspath(path)
  if path.endswith(INDEX_SUFFIX) and os.path.isfile(path):
    return path[: -len(INDEX_SUFFIX)]
  if os.path.isfile(path + INDEX_SUFFIX):
    return path
  if os.path.isdir(path):
    state = os.path.join(path, "checkpoint")
    if os.path.isfile(state):
      with open(state, encoding="utf-8") as f:
        for line in f:
          key, _, value = line.partition(":")
          if key.strip() == "model_checkpoint_path":
            name = value.strip().strip('"')
            prefix = name if os.path.isabs(name) else os.path.join(path, name)
            if os.path.isfile(prefix + INDEX_SUFFIX):
              return prefix
            raise ElectraError(f"{state} names {name}, but {prefix}{INDEX_SUFFIX} does not exist")
    indexes = sorted(n for n in os.listdir(path) if n.endswith(INDEX_SUFFIX))
    if len(indexes) == 1:
      return os.path.join(path, indexes[0][: -len(INDEX_SUFFIX)])
    if indexes:
      raise ElectraError(
        f"{path} holds {len(indexes)} checkpoints ({', '.join(indexes)}): pass one prefix, "
        f"e.g. {os.path.join(path, indexes[-1][: -len(INDEX_SUFFIX)])}"
      )
    raise ElectraError(f"{path} holds no TensorFlow checkpoint (no *{INDEX_SUFFIX} file)")
  raise ElectraError(
    f"no TensorFlow checkpoint at {path}: pass the prefix (e.g. dir/model.ckpt-1000000, "
    f"whose {INDEX_SUFFIX} and .data-* files exist), its {INDEX_SUFFIX} file, or its directory"
  )


def data_filename(prefix: str, shard: int, num_shards: int) -> str:
  return f"{prefix}.data-{shard:05d}-of-{num_shards:05d}"


class TFCheckpoint:
  """A TensorFlow V2 checkpoint: its variables' names, dtypes and shapes, and their values.

  The index is read when constructed; `read` reads one tensor from its data
  file and checks its CRC32C.
  """

  def __init__(self, path: str | os.PathLike):
    self.prefix = resolve_prefix(path)
    index = self.prefix + INDEX_SUFFIX
    with open(index, "rb") as f:
      data = f.read()
    self.entries: dict[str, Entry] = {}
    header = None
    try:
      for key, value in _table_entries(data):
        if key == b"":
          header = dict(_fields(value))
          continue
        name = key.decode("utf-8")
        self.entries[name] = _parse_entry(name, value)
    except (ValueError, UnicodeDecodeError) as e:
      raise ElectraError(
        f"{index} is not a readable TensorFlow checkpoint index (tensor bundle V2): {e}"
      ) from None
    if header is None:
      raise ElectraError(f"{index} has no bundle header: not a TensorFlow V2 checkpoint")
    self.num_shards = int(header.get(1, 1))
    if header.get(2, 0) != 0:
      raise ElectraError(f"{index} was written big-endian; only little-endian checkpoints are read")

  def shapes(self) -> dict[str, tuple[int, ...]]:
    """Variable name -> shape, sorted by name."""
    return {name: e.shape for name, e in sorted(self.entries.items())}

  def read(self, name: str) -> np.ndarray:
    """The value of variable `name`, checksum verified."""
    entry = self.entries.get(name)
    if entry is None:
      raise ElectraError(f"{self.prefix} has no variable {name!r}")
    if entry.sliced:
      raise ElectraError(f"{name} is a partitioned (sliced) variable; those are not supported")
    if entry.dtype == _BFLOAT16:
      dtype = _bfloat16()
    elif entry.dtype in _DTYPES:
      dtype = _DTYPES[entry.dtype]
    else:
      raise ElectraError(f"{name} holds {entry.dtype_name} values; only numeric tensors are read")
    count = int(np.prod(entry.shape, dtype=np.int64))
    if entry.size != count * dtype.itemsize:
      raise ElectraError(
        f"{name}: the index says {entry.size} bytes, but {entry.shape} {entry.dtype_name} "
        f"takes {count * dtype.itemsize}: corrupt checkpoint"
      )
    file = data_filename(self.prefix, entry.shard_id, self.num_shards)
    try:
      with open(file, "rb") as f:
        f.seek(entry.offset)
        raw = f.read(entry.size)
    except OSError as e:
      raise ElectraError(f"cannot read {name} from {file}: {e}") from None
    if len(raw) != entry.size:
      raise ElectraError(f"{file} ends inside {name}: truncated checkpoint")
    if entry.crc32c is not None and masked_crc32c(raw) != entry.crc32c:
      raise ElectraError(f"{name}: checksum mismatch in {file}: corrupt checkpoint")
    return np.frombuffer(raw, dtype=dtype).reshape(entry.shape).copy()


# -- writing -----------------------------------------------------------------------


def _block(entries: list[tuple[bytes, bytes]]) -> bytes:
  """A block with a restart point at every entry (no key sharing: simple and valid)."""
  out, restarts = bytearray(), []
  for key, value in entries:
    restarts.append(len(out))
    out += _put_varint(0) + _put_varint(len(key)) + _put_varint(len(value)) + key + value
  for r in restarts or [0]:
    out += struct.pack("<I", r)
  out += struct.pack("<I", len(restarts or [0]))
  return bytes(out)


def _with_trailer(block: bytes) -> bytes:
  return block + b"\0" + struct.pack("<I", masked_crc32c(block + b"\0"))


def write_checkpoint(prefix: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> str:
  """Writes `arrays` (name -> numeric numpy array) as a one-shard TensorFlow V2 checkpoint.

  Returns the prefix; `PREFIX.index` and `PREFIX.data-00000-of-00001` are
  written (the directory is created if need be).
  """
  prefix = os.fspath(prefix)
  entries = []
  data = bytearray()
  for name in sorted(arrays):
    if not name:
      raise ElectraError("a variable needs a non-empty name")
    array = np.asarray(arrays[name])
    dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    if dtype.name == "bfloat16":
      code = _BFLOAT16
    elif dtype in _TF_DTYPE:
      code = _TF_DTYPE[dtype]
    else:
      raise ElectraError(f"{name}: cannot write {array.dtype} tensors")
    raw = np.ascontiguousarray(array, dtype=dtype).tobytes()
    shape = b"".join(_put_field(2, _put_field(1, d) if d else b"") for d in array.shape)
    entry = _put_field(1, code) + _put_field(2, shape)
    entry += (_put_field(4, len(data)) if data else b"") + (_put_field(5, len(raw)) if raw else b"")
    entry += _put_varint(6 << 3 | 5) + struct.pack("<I", masked_crc32c(raw))
    entries.append((name.encode("utf-8"), entry))
    data += raw
  version = _put_field(1, 1)  # VersionDef.producer = 1
  header = _put_field(1, 1) + _put_field(3, version)  # num_shards = 1, LITTLE (0, omitted)
  data_block = _with_trailer(_block([(b"", header), *entries]))
  meta_block = _with_trailer(_block([]))
  last_key = entries[-1][0] if entries else b""
  handle = _put_varint(0) + _put_varint(len(data_block) - _BLOCK_TRAILER_LEN)
  index_block = _with_trailer(_block([(last_key, handle)]))
  meta_offset = len(data_block)
  index_offset = meta_offset + len(meta_block)
  footer = _put_varint(meta_offset) + _put_varint(len(meta_block) - _BLOCK_TRAILER_LEN)
  footer += _put_varint(index_offset) + _put_varint(len(index_block) - _BLOCK_TRAILER_LEN)
  footer = footer.ljust(_FOOTER_LEN - 8, b"\0") + _TABLE_MAGIC.to_bytes(8, "little")
  os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)  # as TensorFlow does
  with open(data_filename(prefix, 0, 1), "wb") as f:
    f.write(bytes(data))
  with open(prefix + INDEX_SUFFIX, "wb") as f:
    f.write(data_block + meta_block + index_block + footer)
  return prefix
