#!/usr/bin/python3
"""Independent float64 reference of the llama / qwen2 / phi3 forward pass, for checking kvrag.

Nothing here is shared with kvrag's C++: the GGUF reader, the block decoders and the forward
pass are written from the GGUF / ggml format definitions (ggml-common.h block structs,
ggml-quants.c reference (de)quantisers). Only numpy is needed (Debian: python3-numpy).

Usage:
    /usr/bin/python3 tools/reference_forward.py MODEL.gguf --tokens 1,5,9 [--n-ctx N]
prints {"logits": [[n_vocab floats] for every position]} on stdout. --n-ctx is the per-sequence
context the run is for; it selects a phi3 model's LongRoPE factor set (default: the trained
context).

phi3 (as ../shared/data/README.md describes the reference engine): attn_qkv holds the Q rows,
then K, then V; ffn_up holds the gate rows, then up; NEOX RoPE over the first
rope.dimension_count dims of each head; with rope_factors_long/short, pair i's angle is divided
by f_i, the long set when n_ctx rounded up to a multiple of 256 exceeds
rope.scaling.original_context_length, else the short set, and cos and sin are multiplied by
rope.scaling.attn_factor.

Activation quantisation. ggml-style runtimes (llama.cpp, kvrag) do not dot a quantised weight
row with float activations: the activation row is first rounded to the weight type's "vec_dot
type" (Q4_0/Q5_0/Q8_0 -> Q8_0, Q4_1/Q5_1 -> Q8_1, K-quants -> Q8_K, F16 -> F16, BF16 -> BF16,
F32 -> F32). By default this script applies the same rounding (in float64) before every
matmul, so the remaining difference to a float32 runtime is summation order and float32
rounding only. --exact-activations turns it off (the "ideal" model the file describes).
"""

import argparse
import json
import struct
import sys

import numpy as np

# =============================================================================================
# GGUF reader
# =============================================================================================

GGUF_MAGIC = b"GGUF"

# Metadata value types (gguf_type).
_SCALAR_FORMATS = {
    0: "<B",   # uint8
    1: "<b",   # int8
    2: "<H",   # uint16
    3: "<h",   # int16
    4: "<I",   # uint32
    5: "<i",   # int32
    6: "<f",   # float32
    7: "<?",   # bool
    10: "<Q",  # uint64
    11: "<q",  # int64
    12: "<d",  # float64
}
_TYPE_STRING = 8
_TYPE_ARRAY = 9

# Tensor types (ggml_type): id -> (name, elements per block, bytes per block).
GGML_TYPES = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    30: ("BF16", 1, 2),
}


class GgufFile:
    """Header, metadata and tensor index of a GGUF file (versions 2 and 3).

    metadata: key -> python value (arrays become lists).
    tensors:  name -> (type name, ne, absolute byte offset); ne[0] is the row length.
    """

    def __init__(self, path):
        with open(path, "rb") as f:
            self.data = f.read()
        self.pos = 0
        if self._read(4) != GGUF_MAGIC:
            raise ValueError(f"{path}: not a GGUF file")
        version = self._unpack("<I")
        if version not in (2, 3):
            raise ValueError(f"{path}: unsupported GGUF version {version}")
        n_tensors = self._unpack("<Q")
        n_kv = self._unpack("<Q")

        self.metadata = {}
        for _ in range(n_kv):
            key = self._read_string()
            value_type = self._unpack("<I")
            self.metadata[key] = self._read_value(value_type)

        infos = []
        for _ in range(n_tensors):
            name = self._read_string()
            n_dims = self._unpack("<I")
            ne = [self._unpack("<Q") for _ in range(n_dims)]
            type_id = self._unpack("<I")
            offset = self._unpack("<Q")
            if type_id not in GGML_TYPES:
                raise ValueError(f"tensor '{name}' has unsupported type id {type_id}")
            infos.append((name, GGML_TYPES[type_id][0], ne, offset))

        # The data section starts at the next multiple of general.alignment.
        alignment = int(self.metadata.get("general.alignment", 32))
        data_start = (self.pos + alignment - 1) // alignment * alignment
        self.tensors = {name: (tname, ne, data_start + off) for name, tname, ne, off in infos}
        self.cache = {}  # name -> dequantised float64 array (see weight())

    # --- primitive reads ---
    def _read(self, n):
        if self.pos + n > len(self.data):
            raise ValueError(f"truncated GGUF: read of {n} bytes at {self.pos} past {len(self.data)}")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def _unpack(self, fmt):
        return struct.unpack(fmt, self._read(struct.calcsize(fmt)))[0]

    def _read_string(self):
        n = self._unpack("<Q")
        return self._read(n).decode("utf-8", errors="replace")

    def _read_value(self, value_type):
        if value_type in _SCALAR_FORMATS:
            return self._unpack(_SCALAR_FORMATS[value_type])
        if value_type == _TYPE_STRING:
            return self._read_string()
        if value_type == _TYPE_ARRAY:
            item_type = self._unpack("<I")
            n = self._unpack("<Q")
            return [self._read_value(item_type) for _ in range(n)]
        raise ValueError(f"bad metadata value type {value_type} at byte {self.pos}")

    # --- tensors ---
    def has_tensor(self, name):
        return name in self.tensors

    def tensor(self, name):
        """Returns the tensor dequantised to float64, numpy shape reversed from ne:
        a matrix with ne = [n_cols, n_rows] comes back as (n_rows, n_cols)."""
        tname, ne, offset = self.tensors[name]
        n = int(np.prod(ne))
        _, block, size = next(v for v in GGML_TYPES.values() if v[0] == tname)
        n_bytes = n // block * size
        raw = np.frombuffer(self.data, dtype=np.uint8, count=n_bytes, offset=offset)
        values = dequantize(tname, raw, n)
        return values.reshape(list(reversed(ne)))

    def tensor_type(self, name):
        return self.tensors[name][0]


# =============================================================================================
# Dequantisation (block layouts of ggml-common.h; every result is exact in float64)
# =============================================================================================

def fp16(raw_u8):
    """(..., 2) little-endian bytes -> (...) float64."""
    return np.ascontiguousarray(raw_u8).view("<f2")[..., 0].astype(np.float64)


def bf16_bits_to_f64(bits_u16):
    return (bits_u16.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def nibbles_32(qs):
    """qs (nb, 16) -> (nb, 32): element j is the low nibble of qs[j], element j + 16 the high."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int64)


def high_bits_32(qh):
    """qh (nb, 4) little-endian uint32 -> (nb, 32) with bit j as element j."""
    word = np.ascontiguousarray(qh).view("<u4")[:, 0].astype(np.int64)
    return (word[:, None] >> np.arange(32)) & 1


def k4_scales_mins(scales):
    """Q4_K/Q5_K packed scales (nb, 12) -> sc (nb, 8), m (nb, 8), 6 bits each.
    Sub-blocks 0..3: low 6 bits of bytes j (scale) and j + 4 (min). Sub-blocks 4..7: low / high
    nibble of byte j + 4 for scale / min, top 2 bits from the spare top bits of bytes j - 4
    (scale) and j (min)."""
    s = scales.astype(np.int64)
    sc = np.empty((s.shape[0], 8), dtype=np.int64)
    m = np.empty((s.shape[0], 8), dtype=np.int64)
    sc[:, :4] = s[:, 0:4] & 63
    m[:, :4] = s[:, 4:8] & 63
    sc[:, 4:] = (s[:, 8:12] & 0x0F) | ((s[:, 0:4] >> 6) << 4)
    m[:, 4:] = (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)
    return sc, m


def k_quant_low_bits(qs):
    """Q4_K/Q5_K qs (nb, 128) -> (nb, 256) 4-bit values. Chunk c covers elements
    [64c, 64c + 64): low nibbles of qs[32c:32c+32] then their high nibbles."""
    q = qs.reshape(-1, 4, 32).astype(np.int64)
    return np.concatenate([q & 0x0F, q >> 4], axis=2).reshape(-1, 256)


def k_quant_fifth_bit(qh):
    """Q5_K qh (nb, 32) -> (nb, 256): bit 2c of qh[l] for element 64c + l, bit 2c + 1 for
    element 64c + 32 + l."""
    h = qh.astype(np.int64)
    chunks = []
    for c in range(4):
        chunks.append((h >> (2 * c)) & 1)
        chunks.append((h >> (2 * c + 1)) & 1)
    return np.concatenate(chunks, axis=1)


def dequantize_blocks(tname, b):
    """b (nb, bytes per block) -> (values (nb, block), mins or None).

    For Q4_1/Q5_1 also returns the per-block min m (nb,) so that a dot product can be
    formed the way ggml forms it (see matmul)."""
    if tname == "Q4_0":    # {fp16 d; u8 qs[16]}          x = d (q - 8)
        return fp16(b[:, 0:2])[:, None] * (nibbles_32(b[:, 2:18]) - 8), None
    if tname == "Q4_1":    # {fp16 d, m; u8 qs[16]}       x = d q + m
        d, m = fp16(b[:, 0:2]), fp16(b[:, 2:4])
        return d[:, None] * nibbles_32(b[:, 4:20]) + m[:, None], m
    if tname == "Q5_0":    # {fp16 d; u32 qh; u8 qs[16]}  x = d (q - 16)
        q = nibbles_32(b[:, 6:22]) | (high_bits_32(b[:, 2:6]) << 4)
        return fp16(b[:, 0:2])[:, None] * (q - 16), None
    if tname == "Q5_1":    # {fp16 d, m; u32 qh; u8 qs[16]}  x = d q + m
        d, m = fp16(b[:, 0:2]), fp16(b[:, 2:4])
        q = nibbles_32(b[:, 8:24]) | (high_bits_32(b[:, 4:8]) << 4)
        return d[:, None] * q + m[:, None], m
    if tname == "Q8_0":    # {fp16 d; i8 qs[32]}          x = d q
        return fp16(b[:, 0:2])[:, None] * b[:, 2:34].view(np.int8).astype(np.int64), None
    if tname in ("Q4_K", "Q5_K"):
        # {fp16 d, dmin; u8 scales[12]; [Q5_K: u8 qh[32]]; u8 qs[128]}
        # x = d sc[j] q - dmin m[j] over 8 sub-blocks j of 32
        d, dmin = fp16(b[:, 0:2]), fp16(b[:, 2:4])
        sc, m = k4_scales_mins(b[:, 4:16])
        if tname == "Q4_K":
            q = k_quant_low_bits(b[:, 16:144])
        else:
            q = k_quant_low_bits(b[:, 48:176]) | (k_quant_fifth_bit(b[:, 16:48]) << 4)
        scale = np.repeat(d[:, None] * sc, 32, axis=1)    # (nb, 256)
        offset = np.repeat(dmin[:, None] * m, 32, axis=1)  # (nb, 256)
        return scale * q - offset, None
    if tname == "Q6_K":
        # {u8 ql[128]; u8 qh[64]; i8 scales[16]; fp16 d}   x = d scales[j] (q - 32), j = e / 16
        ql = b[:, 0:128].astype(np.int64)
        qh = b[:, 128:192].astype(np.int64)
        scales = b[:, 192:208].view(np.int8).astype(np.int64)
        d = fp16(b[:, 208:210])
        halves = []
        for h in range(2):  # half h: ql[64h : 64h + 64], qh[32h : 32h + 32]
            l0, l1 = ql[:, 64 * h:64 * h + 32], ql[:, 64 * h + 32:64 * h + 64]
            hb = qh[:, 32 * h:32 * h + 32]
            halves += [(l0 & 0xF) | (((hb >> 0) & 3) << 4),   # elements 128h + [0, 32)
                       (l1 & 0xF) | (((hb >> 2) & 3) << 4),   # 128h + [32, 64)
                       (l0 >> 4) | (((hb >> 4) & 3) << 4),    # 128h + [64, 96)
                       (l1 >> 4) | (((hb >> 6) & 3) << 4)]    # 128h + [96, 128)
        q = np.concatenate(halves, axis=1) - 32           # (nb, 256)
        return d[:, None] * np.repeat(scales, 16, axis=1) * q, None
    raise ValueError(f"no block decoder for {tname}")


def dequantize(tname, raw, n):
    """raw: the tensor's bytes (uint8); returns (n) float64."""
    if tname == "F32":
        return raw.view("<f4").astype(np.float64)
    if tname == "F16":
        return raw.view("<f2").astype(np.float64)
    if tname == "BF16":
        return bf16_bits_to_f64(raw.view("<u2"))
    _, block, size = next(v for v in GGML_TYPES.values() if v[0] == tname)
    values, _ = dequantize_blocks(tname, raw.reshape(n // block, size))
    return values.reshape(n)


def block_mins(gguf, name):
    """Per-block min m of a Q4_1/Q5_1 matrix: (n_rows, n_cols / 32)."""
    tname, ne, offset = gguf.tensors[name]
    _, block, size = next(v for v in GGML_TYPES.values() if v[0] == tname)
    nb = int(np.prod(ne)) // block
    raw = np.frombuffer(gguf.data, dtype=np.uint8, count=nb * size, offset=offset)
    _, m = dequantize_blocks(tname, raw.reshape(nb, size))
    return m.reshape(ne[1], ne[0] // block)


# =============================================================================================
# Activation quantisation (ggml's vec_dot types), emulated in float64
# =============================================================================================

class Rounding:
    """Makes every rounding decision of the activation emulation, and keeps track of near-ties.

    A float32 runtime computes the same activations with an error of ~1e-7 relative to their
    magnitude, so a value that close to a rounding midpoint may legitimately round the other
    way there. With rel_window > 0, every decision within rel_window * magnitude of a midpoint
    is recorded as an event (call number, flat index, position); replaying the pass with those
    events in `flips` rounds them the other way (see near_ties). The magnitude is the
    block's largest value for Q8 integer rounding (127 in units of the step: float32 error is
    relative to the operands, not to a small result) and |value| for fp16/bf16 rounding."""

    def __init__(self, rel_window=0.0, flips=()):
        self.rel_window = rel_window
        self.flips = set(flips)     # {(call, flat index)} to round the other way
        self.call = 0
        self.events = []            # [(call, flat index, position)]

    def choose(self, exact, default, alt, magnitude):
        """exact (n, ...): values; default: the grid point the rounding rule picks; alt: the
        grid point on the other side of exact; magnitude: scalar or like exact, see above.
        Returns default, with the flips applied."""
        call = self.call
        self.call += 1
        if self.rel_window > 0:
            step = np.abs(alt - default)
            to_midpoint = step / 2 - np.abs(exact - default)   # (n, ...)
            near = (step > 0) & (to_midpoint <= magnitude * self.rel_window)
            per_row = exact.size // exact.shape[0]
            self.events += [(call, int(i), int(i) // per_row) for i in np.flatnonzero(near)]
        here = [index for c, index in self.flips if c == call]
        if here:
            default = default.copy()
            default.flat[here] = alt.flat[here]
        return default

    # --- the three kinds of rounding the runtime does ---
    def to_int(self, r, ties_away):
        """Round r (in units of the step, |r| <= 127) to an integer: C roundf (ties away from
        zero) or nearest_int (ties to even)."""
        q = np.sign(r) * np.floor(np.abs(r) + 0.5) if ties_away else np.rint(r)
        return self.choose(r, q, q + np.where(r >= q, 1.0, -1.0), 127.0)

    def to_f16(self, v):
        """Round to the nearest (ties to even) IEEE half."""
        h16 = v.astype(np.float16)
        h = h16.astype(np.float64)
        alt = np.nextafter(h16, np.where(v >= h, np.inf, -np.inf).astype(np.float16)).astype(np.float64)
        return self.choose(v, h, alt, np.abs(v))

    def to_bf16(self, v):
        """Round to the nearest (ties to even) bfloat16: the top 16 bits of the float32."""
        u = v.astype(np.float32).view(np.uint32).astype(np.int64)
        bits = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
        h = bf16_bits_to_f64(bits.astype(np.uint16))
        away = np.abs(v) >= np.abs(h)      # alt is the neighbour of larger or smaller magnitude
        alt_bits = np.where(away | ((bits & 0x7FFF) == 0), bits + 1, bits - 1)
        return self.choose(v, h, bf16_bits_to_f64(alt_bits.astype(np.uint16)), np.abs(v))


def quantize_q8(x, rnd):
    """Q8_0 / Q8_1: x (n, k) -> (dequantised (n, k), s (n, k/32)).
    Per block of 32: d = amax / 127, q = roundf(x / d); the stored scale is fp16(d).
    s is Q8_1's extra field fp16(d * sum(q)), formed with the unrounded d."""
    n, k = x.shape
    xb = x.reshape(n, k // 32, 32)
    d = np.abs(xb).max(axis=2) / 127.0                    # (n, k/32)
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d != 0)
    q = rnd.to_int(xb * inv[:, :, None], ties_away=True)  # (n, k/32, 32)
    d16 = rnd.to_f16(d)
    s = rnd.to_f16(d * q.sum(axis=2))
    return (q * d16[:, :, None]).reshape(n, k), s


def quantize_q8_k(x, rnd):
    """Q8_K: x (n, k) -> dequantised (n, k). Per block of 256: m = the element of largest
    magnitude (with its sign), q = min(127, nearest_int(-127 x / m)), d = -m / 127 (a float)."""
    n, k = x.shape
    xb = x.reshape(n, k // 256, 256)
    idx = np.abs(xb).argmax(axis=2)
    m = np.take_along_axis(xb, idx[:, :, None], axis=2)[:, :, 0]   # (n, k/256)
    iscale = np.divide(-127.0, m, out=np.zeros_like(m), where=m != 0)
    q = np.minimum(127.0, rnd.to_int(xb * iscale[:, :, None], ties_away=False))
    d = np.divide(1.0, iscale, out=np.zeros_like(iscale), where=iscale != 0)
    return (q * d[:, :, None]).reshape(n, k)


# weight type -> the activation format its dot product takes (Q8_0 and Q8_1 round alike)
VEC_DOT_TYPE = {"F32": "F32", "F16": "F16", "BF16": "BF16",
                "Q4_0": "Q8", "Q5_0": "Q8", "Q8_0": "Q8", "Q4_1": "Q8", "Q5_1": "Q8",
                "Q4_K": "Q8_K", "Q5_K": "Q8_K", "Q6_K": "Q8_K"}


class Activation:
    """An activation matrix x (n, k) and its roundings to vec_dot types, each made once, as the
    runtime does before the matmuls that share an input (q/k/v, gate/up).
    rnd None: no rounding at all (--exact-activations)."""

    def __init__(self, x, rnd):
        self.x = x
        self.rnd = rnd
        self.forms = {}

    def as_type(self, vec_dot_type):
        """-> (values (n, k), Q8_1 block sums s (n, k/32) or None)."""
        if self.rnd is None or vec_dot_type == "F32":
            return self.x, None
        if vec_dot_type not in self.forms:
            if vec_dot_type == "F16":
                form = (self.rnd.to_f16(self.x), None)
            elif vec_dot_type == "BF16":
                form = (self.rnd.to_bf16(self.x), None)
            elif vec_dot_type == "Q8_K":
                form = (quantize_q8_k(self.x, self.rnd), None)
            else:
                form = quantize_q8(self.x, self.rnd)
            self.forms[vec_dot_type] = form
        return self.forms[vec_dot_type]


# =============================================================================================
# Neural-net blocks
# =============================================================================================

def matmul(gguf, name, act):
    """y (n, n_rows) = x (n, n_cols) W^T for the weight `name`, W (n_rows, n_cols), x = act.

    x is first rounded to the weight type's vec_dot type, and for Q4_1/Q5_1 the min term uses
    the Q8_1 block sum s as ggml's dot does:
        dot = sum_b [ d_w d_y sum_i(q_w q_y) + m_w s_y ]."""
    w = weight(gguf, name)
    tname = gguf.tensor_type(name)
    xq, s = act.as_type(VEC_DOT_TYPE[tname])
    y = xq @ w.T
    if s is not None and tname in ("Q4_1", "Q5_1"):
        # xq @ w.T holds m_w * d_y sum(q_y) per block; swap it for m_w * s_y.
        exact = xq.reshape(xq.shape[0], -1, 32).sum(axis=2)   # (n, n_blocks) d_y sum(q_y)
        y += (s - exact) @ block_mins(gguf, name).T
    return y


def weight(gguf, name):
    """The dequantised tensor `name`, decoded once per file."""
    if name not in gguf.cache:
        gguf.cache[name] = gguf.tensor(name)
    return gguf.cache[name]


def rmsnorm(x, w, eps):
    """x (n, d), w (d) -> (n, d)."""
    return x / np.sqrt(np.mean(x * x, axis=1, keepdims=True) + eps) * w


def rope(x, positions, n_rot, base, freq_scale, neox, factors=None, attn_factor=1.0):
    """x (n, n_heads, head_dim) rotated in place of the first n_rot dims of each head.
    Pair i in [0, n_rot/2) rotates by theta = pos * freq_scale * base^(-2i / n_rot) / factors[i];
    llama pairs dims (2i, 2i + 1), NEOX (qwen2, phi3) pairs (i, i + n_rot/2). LongRoPE's
    attn_factor multiplies cos and sin."""
    half = n_rot // 2
    inv_freq = base ** (-2.0 * np.arange(half) / n_rot)             # (half)
    if factors is not None:
        inv_freq = inv_freq / factors
    theta = (positions * freq_scale)[:, None] * inv_freq[None, :]   # (n, half)
    cos = attn_factor * np.cos(theta)[:, None, :]                   # (n, 1, half)
    sin = attn_factor * np.sin(theta)[:, None, :]
    out = x.copy()
    if neox:
        a, b = x[..., :half], x[..., half:n_rot]
        out[..., :half] = a * cos - b * sin
        out[..., half:n_rot] = a * sin + b * cos
    else:
        a, b = x[..., 0:n_rot:2], x[..., 1:n_rot:2]
        out[..., 0:n_rot:2] = a * cos - b * sin
        out[..., 1:n_rot:2] = a * sin + b * cos
    return out


def attention(q, k, v):
    """Causal grouped-query attention over one sequence.
    q (n, n_head, head_dim), k and v (n, n_head_kv, head_dim) -> (n, n_head * head_dim)."""
    n, n_head, head_dim = q.shape
    group = n_head // k.shape[1]
    k = np.repeat(k, group, axis=1)                       # (n, n_head, head_dim)
    v = np.repeat(v, group, axis=1)
    scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(head_dim)   # (n_head, n, n)
    scores[:, np.triu(np.ones((n, n), dtype=bool), k=1)] = -np.inf
    scores -= scores.max(axis=2, keepdims=True)
    p = np.exp(scores)
    p /= p.sum(axis=2, keepdims=True)
    return np.einsum("hqk,khd->qhd", p, v).reshape(n, n_head * head_dim)


def silu(x):
    return x / (1.0 + np.exp(-x))


# =============================================================================================
# Forward pass
# =============================================================================================

class HParams:
    def __init__(self, gguf, n_ctx):
        md = gguf.metadata
        self.arch = md["general.architecture"]
        if self.arch not in ("llama", "qwen2", "phi3"):
            raise ValueError(f"unsupported architecture {self.arch}")
        a = self.arch
        self.n_embd = int(md[f"{a}.embedding_length"])
        self.n_layer = int(md[f"{a}.block_count"])
        self.n_head = int(md[f"{a}.attention.head_count"])
        self.n_head_kv = int(md.get(f"{a}.attention.head_count_kv", self.n_head))
        self.head_dim = int(md.get(f"{a}.attention.key_length", self.n_embd // self.n_head))
        self.n_rot = int(md.get(f"{a}.rope.dimension_count", self.head_dim))
        self.rope_base = float(md.get(f"{a}.rope.freq_base", 10000.0))
        self.freq_scale = 1.0
        if md.get(f"{a}.rope.scaling.type", "none") == "linear":
            self.freq_scale = 1.0 / float(md[f"{a}.rope.scaling.factor"])
        self.rms_eps = float(md[f"{a}.attention.layer_norm_rms_epsilon"])
        self.neox = self.arch in ("qwen2", "phi3")
        self.fused = self.arch == "phi3"    # attn_qkv and gate+up in ffn_up
        if self.fused and self.n_head * self.head_dim != self.n_embd:
            raise ValueError("phi3 needs head_count * head_dim == embedding_length")
        # LongRoPE: one factor set for the whole run, chosen by the per-sequence context.
        self.rope_factors = None
        self.attn_factor = float(md.get(f"{a}.rope.scaling.attn_factor", 1.0)) if self.fused else 1.0
        if gguf.has_tensor("rope_factors_long.weight"):
            n_ctx_orig = int(md[f"{a}.rope.scaling.original_context_length"])
            n_ctx = int(md[f"{a}.context_length"]) if n_ctx is None else n_ctx
            padded = (n_ctx + 255) // 256 * 256
            name = "rope_factors_long.weight" if padded > n_ctx_orig else "rope_factors_short.weight"
            self.rope_factors = gguf.tensor(name)                    # (n_rot / 2)


def forward(gguf, tokens, rnd, n_ctx=None):
    """tokens (n) -> logits (n, n_vocab) for one sequence at positions 0 .. n-1.
    rnd: the Rounding that emulates the runtime's activation formats, or None for none.
    n_ctx: the per-sequence context (LongRoPE's set); None: the trained context."""
    hp = HParams(gguf, n_ctx)
    n_q, n_kv = hp.n_head * hp.head_dim, hp.n_head_kv * hp.head_dim
    n = len(tokens)
    positions = np.arange(n, dtype=np.float64)

    def bias(name):
        return weight(gguf, name) if gguf.has_tensor(name) else 0.0

    # token embeddings: x (n, n_embd)
    x = weight(gguf, "token_embd.weight")[np.asarray(tokens)]

    for il in range(hp.n_layer):
        p = f"blk.{il}."
        # attention sub-block: normed input xn (n, n_embd), rounded once for q, k and v
        xn = Activation(rmsnorm(x, weight(gguf, p + "attn_norm.weight"), hp.rms_eps), rnd)
        if hp.fused:
            qkv = matmul(gguf, p + "attn_qkv.weight", xn)                     # (n, n_q + 2 n_kv)
            q, k, v = qkv[:, :n_q], qkv[:, n_q:n_q + n_kv], qkv[:, n_q + n_kv:]
        else:
            q = matmul(gguf, p + "attn_q.weight", xn) + bias(p + "attn_q.bias")   # (n, n_head * head_dim)
            k = matmul(gguf, p + "attn_k.weight", xn) + bias(p + "attn_k.bias")   # (n, n_head_kv * head_dim)
            v = matmul(gguf, p + "attn_v.weight", xn) + bias(p + "attn_v.bias")   # (n, n_head_kv * head_dim)
        rope_args = (positions, hp.n_rot, hp.rope_base, hp.freq_scale, hp.neox, hp.rope_factors, hp.attn_factor)
        q = rope(q.reshape(n, hp.n_head, hp.head_dim), *rope_args)
        k = rope(k.reshape(n, hp.n_head_kv, hp.head_dim), *rope_args)
        v = v.reshape(n, hp.n_head_kv, hp.head_dim)
        att = Activation(attention(q, k, v), rnd)                             # (n, n_head * head_dim)
        x = x + matmul(gguf, p + "attn_output.weight", att)                   # residual (n, n_embd)

        # feed-forward sub-block (SwiGLU): down(silu(gate(xn)) * up(xn))
        xn = Activation(rmsnorm(x, weight(gguf, p + "ffn_norm.weight"), hp.rms_eps), rnd)
        if hp.fused:
            gate_up = matmul(gguf, p + "ffn_up.weight", xn)                  # (n, 2 n_ff): gate, then up
            n_ff = gate_up.shape[1] // 2
            h = silu(gate_up[:, :n_ff]) * gate_up[:, n_ff:]                   # (n, n_ff)
        else:
            h = silu(matmul(gguf, p + "ffn_gate.weight", xn)) * matmul(gguf, p + "ffn_up.weight", xn)  # (n, n_ff)
        x = x + matmul(gguf, p + "ffn_down.weight", Activation(h, rnd))       # (n, n_embd)

    # final norm and output head (tied to token_embd when output.weight is absent)
    xn = Activation(rmsnorm(x, weight(gguf, "output_norm.weight"), hp.rms_eps), rnd)
    head = "output.weight" if gguf.has_tensor("output.weight") else "token_embd.weight"
    return matmul(gguf, head, xn)                                             # (n, n_vocab)


def near_ties(gguf, tokens, rel_window, flips, max_events, n_ctx=None):
    """Runs the emulated pass (with `flips` applied), then replays it once per near-tie rounding
    decision (see Rounding) with that decision flipped as well.

    Returns (logits (n, n_vocab), [(call, index, position, delta (n, n_vocab))]): delta is what
    flipping that one decision does to the logits. A runtime whose float32 arithmetic lands on
    the other side of some of these ties matches logits + the sum of their deltas (to first
    order; replay with those flips for the exact values)."""
    base = Rounding(rel_window, flips)
    logits = forward(gguf, tokens, base, n_ctx)
    if len(base.events) > max_events:
        raise RuntimeError(f"{len(base.events)} near-ties > --max-events {max_events}; lower --tie-window")
    out = []
    for call, index, position in base.events:
        flipped = forward(gguf, tokens, Rounding(flips=set(flips) | {(call, index)}), n_ctx)
        out.append((call, index, position, flipped - logits))
    return logits, out


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", help="GGUF file")
    ap.add_argument("--tokens", required=True, help="comma-separated token ids")
    ap.add_argument("--exact-activations", action="store_true",
                    help="do not emulate the runtime's activation rounding")
    ap.add_argument("--tie-window", type=float, default=0.0, metavar="REL",
                    help="also report near_ties: rounding decisions within REL * magnitude of a tie "
                         "and what flipping each does to the logits (e.g. 5e-6; see Rounding)")
    ap.add_argument("--flips", default="", metavar="CALL:INDEX,...",
                    help="round these decisions (from near_ties) the other way")
    ap.add_argument("--max-events", type=int, default=1000, help="limit on near-ties replayed")
    ap.add_argument("--logits-from", type=int, default=0, metavar="P",
                    help="print the logits of positions P.. only (not with --tie-window)")
    ap.add_argument("--n-ctx", type=int, default=None,
                    help="per-sequence context of the run: selects phi3's LongRoPE factor set "
                         "(default: the trained context)")
    args = ap.parse_args(argv)
    if args.logits_from and args.tie_window > 0:
        ap.error("--logits-from cannot be combined with --tie-window (the ties' deltas cover every position)")
    tokens = [int(t) for t in args.tokens.split(",") if t.strip()]
    flips = {tuple(int(v) for v in f.split(":")) for f in args.flips.split(",") if f.strip()}
    gguf = GgufFile(args.model)
    out = {}
    if args.exact_activations:
        logits = forward(gguf, tokens, None, args.n_ctx)
    elif args.tie_window > 0:
        logits, ties = near_ties(gguf, tokens, args.tie_window, flips, args.max_events, args.n_ctx)
        out["near_ties"] = [{"call": c, "index": i, "position": p,
                             # 7 decimals: deltas only need to tell flips apart (>= 1e-5 here)
                             "delta": [[round(float(v), 7) for v in row] for row in d]}
                            for c, i, p, d in ties]
    else:
        logits = forward(gguf, tokens, Rounding(flips=flips), args.n_ctx)
    out["logits"] = [[float(v) for v in row] for row in logits[args.logits_from:]]
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
