"""Read TensorFlow "V2" checkpoints (`<prefix>.index` + `<prefix>.data-*`) with numpy only.

A V2 checkpoint is a tensor bundle:

- `<prefix>.index` is an SSTable (LevelDB's table format): a sorted list of key -> value pairs, stored in
  blocks, found through an index block named by a fixed-size footer at the end of the file. Keys are tensor
  names; each value is a `BundleEntryProto` (dtype, shape, shard, offset, size, crc32c) saying where the
  tensor's raw bytes lie. The empty key holds a `BundleHeaderProto` (number of shards, endianness).
- `<prefix>.data-00000-of-00001` (one file per shard) holds the tensors' raw bytes back to back.

The protobufs are decoded by hand (they are a few varints), so neither tensorflow nor protobuf is needed.
Not checked: the crc32c of each tensor's bytes (too slow in pure Python for a 500 MB file); sizes are.

    ckpt = TFCheckpoint(Path("models/124M/model.ckpt"))
    ckpt.entries["model/wte"].shape   # (50257, 768)
    wte = ckpt.read("model/wte")      # numpy array
"""

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.errors import ModelError

TABLE_MAGIC = 0xDB4775248B80FB57  # last 8 bytes of every SSTable
FOOTER_SIZE = 48  # two block handles padded to 40 bytes, then the magic number
BLOCK_TRAILER_SIZE = 5  # after each block: compression type (1 byte), masked crc32c (4 bytes)
NO_COMPRESSION, SNAPPY = 0, 1

# tensorflow/core/framework/types.proto DataType -> numpy dtype (little-endian).
DTYPES = {
    1: np.dtype("<f4"),  # DT_FLOAT
    2: np.dtype("<f8"),  # DT_DOUBLE
    3: np.dtype("<i4"),  # DT_INT32
    4: np.dtype("u1"),  # DT_UINT8
    5: np.dtype("<i2"),  # DT_INT16
    6: np.dtype("i1"),  # DT_INT8
    9: np.dtype("<i8"),  # DT_INT64
    10: np.dtype("?"),  # DT_BOOL
    14: np.dtype("<u2"),  # DT_BFLOAT16: read as uint16, widened to float32 below
    17: np.dtype("<u2"),  # DT_UINT16
    19: np.dtype("<f2"),  # DT_HALF
    22: np.dtype("<u4"),  # DT_UINT32
    23: np.dtype("<u8"),  # DT_UINT64
}
DT_BFLOAT16 = 14
DTYPE_NAMES = {7: "string", 8: "complex64", 18: "complex128", 20: "resource", 21: "variant"}


@dataclass(frozen=True)
class Entry:
    """Where one tensor lies in the data file(s): a decoded BundleEntryProto."""

    dtype: int  # DataType enum value
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int
    sliced: bool  # a partitioned variable, saved as slices: not supported


class TFCheckpoint:
    """The index of a V2 checkpoint, read at once; tensors are read from the data file on demand."""

    def __init__(self, prefix: Path):
        self.prefix = Path(prefix)
        self.index_path = Path(f"{self.prefix}.index")
        if not self.index_path.is_file():
            raise ModelError(f"TensorFlow checkpoint index {self.index_path} is missing.")
        try:
            table = read_table(self.index_path.read_bytes())
            header = parse_header(table.pop(b"", b""))
            self.entries = {key.decode(): parse_entry(value) for key, value in table.items()}
        except (ValueError, IndexError, struct.error, UnicodeDecodeError) as err:
            raise ModelError(f"{self.index_path} is not a readable TensorFlow checkpoint index: {err}") from None
        self.num_shards = header["num_shards"]
        if header["big_endian"]:
            raise ModelError(f"{self.index_path} was written on a big-endian machine: not supported.")

    def data_path(self, shard_id: int) -> Path:
        return Path(f"{self.prefix}.data-{shard_id:05d}-of-{self.num_shards:05d}")

    def read(self, name: str) -> np.ndarray:
        entry = self.entries[name]
        dtype = DTYPES.get(entry.dtype)
        if dtype is None or entry.sliced:
            what = DTYPE_NAMES.get(entry.dtype, f"dtype {entry.dtype}")
            what = "a sliced (partitioned) tensor" if entry.sliced else what
            raise ModelError(f"Tensor {name} in {self.index_path} is {what}: not supported.")
        count = int(np.prod(entry.shape, dtype=np.int64))
        if count * dtype.itemsize != entry.size:
            raise ModelError(f"{self.index_path}: tensor {name} has {entry.size} bytes, "
                             f"its shape needs {count * dtype.itemsize}.")
        path = self.data_path(entry.shard_id)
        if not path.is_file():
            raise ModelError(f"TensorFlow checkpoint data file {path} is missing.")
        if path.stat().st_size < entry.offset + entry.size:
            raise ModelError(f"{path} is truncated: tensor {name} should end at byte {entry.offset + entry.size}, "
                             f"the file has {path.stat().st_size} bytes.")
        array = np.fromfile(path, dtype=dtype, count=count, offset=entry.offset).reshape(entry.shape)
        if entry.dtype == DT_BFLOAT16:  # bfloat16 is the top half of a float32
            array = (array.astype(np.uint32) << 16).view(np.float32)
        return array


def read_checkpoint(prefix: Path) -> dict[str, np.ndarray]:
    """Every tensor of the checkpoint at `prefix` (e.g. `models/124M/model.ckpt`), by name."""
    ckpt = TFCheckpoint(prefix)
    return {name: ckpt.read(name) for name in ckpt.entries}


# --- SSTable ------------------------------------------------------------------------------------------------


def read_table(data: bytes) -> dict[bytes, bytes]:
    """All key -> value pairs of an SSTable held in `data`."""
    if len(data) < FOOTER_SIZE or struct.unpack("<Q", data[-8:])[0] != TABLE_MAGIC:
        raise ValueError("no SSTable footer (bad magic number)")
    footer = data[-FOOTER_SIZE:]
    _metaindex, pos = read_handle(footer, 0)  # the metaindex (filters) is not needed
    index_handle, _ = read_handle(footer, pos)
    table = {}
    for _, handle in block_entries(read_block(data, index_handle)):
        table.update(block_entries(read_block(data, read_handle(handle, 0)[0])))
    return table


def read_handle(buf: bytes, pos: int) -> tuple[tuple[int, int], int]:
    """A BlockHandle (offset, size), two varints."""
    offset, pos = read_varint(buf, pos)
    size, pos = read_varint(buf, pos)
    return (offset, size), pos


def read_block(data: bytes, handle: tuple[int, int]) -> bytes:
    offset, size = handle
    end = offset + size
    if end + BLOCK_TRAILER_SIZE > len(data):
        raise ValueError(f"block at {offset} runs past the end of the file")
    block, kind = data[offset:end], data[end]
    crc = struct.unpack("<I", data[end + 1 : end + 5])[0]
    if masked_crc32c(data[offset : end + 1]) != crc:
        raise ValueError(f"block at {offset} fails its checksum")
    if kind == SNAPPY:
        return snappy_decompress(block)
    if kind != NO_COMPRESSION:
        raise ValueError(f"block at {offset} uses compression type {kind}, which this reader cannot decode")
    return block


def block_entries(block: bytes):
    """Yield (key, value) from a block. Keys share prefixes with the previous key; the restart-point array at the
    end of the block (for binary search) is not needed when reading everything in order."""
    num_restarts = struct.unpack("<I", block[-4:])[0]
    end = len(block) - 4 - 4 * num_restarts
    if end < 0:
        raise ValueError("block restart array is larger than the block")
    pos, key = 0, b""
    while pos < end:
        shared, pos = read_varint(block, pos)
        unshared, pos = read_varint(block, pos)
        value_len, pos = read_varint(block, pos)
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + value_len]
        pos += value_len


def snappy_decompress(buf: bytes) -> bytes:
    """Raw snappy (the format LevelDB uses for compressed blocks): a varint length, then literals and copies."""
    length, pos = read_varint(buf, 0)
    out = bytearray()
    while pos < len(buf):
        tag = buf[pos]
        kind, pos = tag & 3, pos + 1
        if kind == 0:  # literal; lengths above 60 are stored in the next 1-4 bytes
            n = tag >> 2
            if n >= 60:
                nbytes = n - 59
                n = int.from_bytes(buf[pos : pos + nbytes], "little")
                pos += nbytes
            out += buf[pos : pos + n + 1]
            pos += n + 1
            continue
        if kind == 1:  # copy, 11-bit offset
            n, offset = 4 + ((tag >> 2) & 7), ((tag >> 5) << 8) | buf[pos]
            pos += 1
        else:  # copy, 2- or 4-byte offset
            nbytes = 2 if kind == 2 else 4
            n, offset = 1 + (tag >> 2), int.from_bytes(buf[pos : pos + nbytes], "little")
            pos += nbytes
        if not 0 < offset <= len(out):
            raise ValueError("corrupt snappy block")
        for _ in range(n):  # byte by byte: a copy may overlap its own output
            out.append(out[-offset])
    if len(out) != length:
        raise ValueError("corrupt snappy block")
    return bytes(out)


# --- crc32c (Castagnoli), as LevelDB masks it ----------------------------------------------------------------


def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        for _ in range(8):
            n = (n >> 1) ^ 0x82F63B78 if n & 1 else n >> 1
        table.append(n)
    return table


CRC_TABLE = _crc_table()


def masked_crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# --- protobuf ------------------------------------------------------------------------------------------------


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        result |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if byte < 0x80:
            return result, pos
        if shift > 63:
            raise ValueError("varint too long")


def proto_fields(buf: bytes):
    """Yield (field number, value) of a protobuf message: ints for varints/fixed, bytes for length-delimited."""
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, pos = read_varint(buf, pos)
        elif wire_type == 1:
            value, pos = struct.unpack("<Q", buf[pos : pos + 8])[0], pos + 8
        elif wire_type == 2:
            n, pos = read_varint(buf, pos)
            value, pos = buf[pos : pos + n], pos + n
        elif wire_type == 5:
            value, pos = struct.unpack("<I", buf[pos : pos + 4])[0], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type}")
        yield number, value


def parse_header(buf: bytes) -> dict:
    """BundleHeaderProto: num_shards = 1, endianness = 2 (0 little, 1 big), version = 3."""
    fields = dict(proto_fields(buf))
    return {"num_shards": fields.get(1, 1), "big_endian": fields.get(2, 0) == 1}


def parse_entry(buf: bytes) -> Entry:
    """BundleEntryProto: dtype = 1, shape = 2, shard_id = 3, offset = 4, size = 5, crc32c = 6, slices = 7."""
    fields, shape, sliced = {}, (), False
    for number, value in proto_fields(buf):
        if number == 2:
            shape = parse_shape(value)
        elif number == 7:
            sliced = True
        else:
            fields[number] = value
    return Entry(dtype=fields.get(1, 0), shape=shape, shard_id=fields.get(3, 0), offset=fields.get(4, 0),
                 size=fields.get(5, 0), crc32c=fields.get(6, 0), sliced=sliced)


def parse_shape(buf: bytes) -> tuple[int, ...]:
    """TensorShapeProto: repeated Dim dim = 2 (Dim: int64 size = 1, string name = 2)."""
    return tuple(dict(proto_fields(dim)).get(1, 0) for number, dim in proto_fields(buf) if number == 2)
