"""One row of x (a decode step at batch 1) against a quantized weight, for float16 models, as half-precision FMAs
written in PTX: no tensor-core tile (quant_gemv's int4 form: 16 rows, 15 masked) and no per-weight float32
conversion and FMA (its int8/fp8 form). x is read as 32-bit words, each the pair (x[2v], x[2v + 1]); the weight
as words whose bytes meet those pairs in order: an int4 byte holds the pair (k 2v, k 2v + 1) itself, two int8 or
e4m3 bytes hold it. Each pair of weights becomes one half2 and meets its x word in one fma.f16x2. The weights
enter scaled by a power of two (int4 1/16, int8 1/128, e4m3 1/256: exact), so the float16 partial sums of a
word (4 products per half) cannot overflow for |x| below about 16,000 (e4m3: 9,000); the power of two returns
with the per-row scale on the float32 sums. Under Triton's interpreter (no PTX) the same sums are made in plain Triton."""
from __future__ import annotations

import os

import torch

from . import gemv

try:
    import triton
    import triton.language as tl

    from . import pdl
except ImportError:  # CPU-only installs
    triton = None

# The first FMA of each weight pair starts the word's sum; the last three add to it; then float32.
_SUM_TAIL = "mov.b32 {l, h}, a; cvt.f32.f16 fl, l; cvt.f32.f16 fh, h; add.f32 $0, fl, fh; }"
_HEAD = "{ .reg .b32 t, w, a, c, d, lo, hi; .reg .b16 l, h, e0, e1, e2, e3; .reg .f32 fl, fh; "


def _pairs(make_pair) -> str:
    """PTX for four weight pairs p = 0..3 (make_pair(p): PTX leaving pair p in w, as a half2), each times x word
    $2+p, summed in a."""
    return "".join(make_pair(p) + ("mul.rn.f16x2 a, w, $2; " if p == 0 else f"fma.rn.f16x2 a, w, ${2 + p}, a; ")
                   for p in range(4))


# int4: $1 one int32 word of packed bytes, byte p = (low, high) nibbles = k (2p, 2p + 1); $6 the pair
# (-(64 + zero / 16), -(4 + zero / 16)). prmt puts byte p in both halves; lop3 0xEA ((a & b) | c) makes
# (1024 + low) in the low half (ulp 1) and (64 + high) in the high half (ulp 1/16: the nibble at bits 4-7);
# times 1/16 plus $6: (low - zero, high - zero) / 16, exact.
INT4_PTX = (_HEAD + "mov.b32 c, 0x2C002C00; "
            + _pairs(lambda p: f"prmt.b32 t, $1, 0, 0x4{p}4{p}; lop3.b32 t, t, 0x00F0000F, 0x54006400, 0xEA; "
                               "fma.rn.f16x2 w, t, c, $6; ") + _SUM_TAIL)
# e4m3: $1 one int64 of 8 bytes, pair p = bytes (2p, 2p + 1) converted by one cvt (compute capability 8.9+), times
# 1/256. $6 unused (the same operands as int4).
FP8_PTX = (_HEAD + "mov.b64 {e0, e1, e2, e3}, $1; mov.b32 c, 0x1C001C00; "
           + _pairs(lambda p: f"cvt.rn.f16x2.e4m3x2 t, e{p}; mul.rn.f16x2 w, t, c; ") + _SUM_TAIL)


def _int8_pairs_ptx() -> str:
    """int8: $1 one int64 of 8 bytes, pair p = bytes (2p, 2p + 1): pairs 0, 1 from the low 32 bits, 2, 3 from the
    high. xor 0x80 makes u = q + 128; prmt sets 0x64 above each byte: 1024 + u (ulp 1); times 1/128 minus 9:
    q / 128, exact. $6 unused (the same operands as int4)."""
    source = (("lo", "0x5140"), ("lo", "0x7362"), ("hi", "0x5140"), ("hi", "0x7362"))
    body = _pairs(lambda p: f"prmt.b32 t, {source[p][0]}, 0x64646464, {source[p][1]}; fma.rn.f16x2 w, t, c, d; ")
    return (_HEAD + "mov.b64 {lo, hi}, $1; xor.b32 lo, lo, 0x80808080; xor.b32 hi, hi, 0x80808080; "
            "mov.b32 c, 0x20002000; mov.b32 d, 0xC880C880; " + body + _SUM_TAIL)


INT8_PTX = _int8_pairs_ptx()
PTX = {"int4": INT4_PTX, "int8": INT8_PTX, "fp8": FP8_PTX}
# The power of two each form's weights enter scaled by (returned with the scale).
UNSCALE = {"int4": 16.0, "int8": 128.0, "fp8": 256.0}

if triton is not None:
    ROW_ASM = tl.constexpr(os.environ.get("TRITON_INTERPRET") != "1")

    @triton.jit
    def _x_words(x_ptr, k, WORDS: tl.constexpr):
        """x[k:k + 8 WORDS] as four (WORDS,) int32 tensors: x words 4j + p (the pairs (x[8j + 2p], x[8j + 2p + 1]))."""
        xw = tl.load(x_ptr.to(tl.pointer_type(tl.int32)) + k // 2 + tl.arange(0, 4 * WORDS)).reshape(WORDS, 2, 2)
        even, odd = tl.split(xw)  # [j, a] = word 4j + 2a, word 4j + 2a + 1
        x0, x2 = tl.split(even)
        x1, x3 = tl.split(odd)
        return x0[None, :], x1[None, :], x2[None, :], x3[None, :]

    @triton.jit
    def _half(word, high: tl.constexpr):
        """One float16 of an int32 x word, as float32 (the interpreter's form)."""
        bits = (word >> 16) if high else word
        return (bits & 0xFFFF).to(tl.uint16).to(tl.float16, bitcast=True).to(tl.float32)

    @triton.jit
    def _word_sums_plain(w, x0, x1, x2, x3, zero, KIND: tl.constexpr):
        """What the PTX computes, in float32: each weight word's 8 products, divided by UNSCALE[KIND]."""
        total = tl.zeros(w.shape, tl.float32)
        for p in tl.static_range(4):
            xp = x0 if p == 0 else x1 if p == 1 else x2 if p == 2 else x3
            for half in tl.static_range(2):
                if KIND == "int4":
                    q = ((w >> (8 * p + 4 * half)) & 0xF).to(tl.float32) - zero.to(tl.float32)
                    q = q / 16.0
                else:
                    byte = ((w >> (16 * p + 8 * half)) & 0xFF).to(tl.uint8)
                    if KIND == "int8":
                        q = byte.to(tl.int8, bitcast=True).to(tl.float32) / 128.0
                    else:
                        q = byte.to(tl.float8e4nv, bitcast=True).to(tl.float32) / 256.0
                total += q * _half(xp, half == 1)
        return total

    @triton.jit
    def _tile_sums(w, x0, x1, x2, x3, zero, zero_pair, KIND: tl.constexpr, ASM: tl.constexpr):
        """Each weight word's 8 products with x, summed, divided by UNSCALE[KIND]: (BLOCK_N, WORDS) float32."""
        if ROW_ASM:
            return tl.inline_asm_elementwise(ASM, "=f,r,r,r,r,r,r" if KIND == "int4" else "=f,l,r,r,r,r,r",
                                             [w, x0, x1, x2, x3, zero_pair], dtype=tl.float32, is_pure=True, pack=1)
        return _word_sums_plain(w, x0, x1, x2, x3, zero, KIND)

    @triton.jit
    def _group_rows(scale_ptr, zero_ptr, rn, K, GROUP: tl.constexpr, GROUP_MAJOR: tl.constexpr):
        """int4: the (BLOCK_N, 1) pointers to each row's first group's scale and zero, in the stored (N, K/g)
        layout or the group-major one (linear)."""
        if GROUP_MAJOR:
            return scale_ptr + rn[:, None], zero_ptr + rn[:, None]
        groups = K // GROUP
        return scale_ptr + rn[:, None].to(tl.int64) * groups, zero_ptr + rn[:, None].to(tl.int64) * groups

    @triton.jit
    def _weights(words, k, n_live, WORDS: tl.constexpr):
        """The tile at column k: its weight words, (BLOCK_N, WORDS)."""
        return tl.load(words + (k // 8 + tl.arange(0, WORDS))[None, :], mask=n_live[:, None], other=0)

    @triton.jit
    def _zero_pair(zero):
        """float16 bits of -(64 + zero / 16) (0xD400: -64, ulp 1/16), -(4 + zero / 16) (0xC400: -4, ulp 1/256)."""
        return (0xD400 | zero) | ((0xC400 | (zero << 4)) << 16)

    @triton.jit
    def _group(scale_rows, zero_rows, k, N, n_live, GROUP: tl.constexpr, GROUP_MAJOR: tl.constexpr,
               KIND: tl.constexpr):
        """int4: the rows' zeros (int32), their pairs for the PTX and scales at column k, (BLOCK_N, 1) each. int8,
        fp8: zeros 0 and scales 1 (their row scales come at the end)."""
        if KIND == "int4":
            group = (k // GROUP) * N if GROUP_MAJOR else k // GROUP  # the offset of column k's group
            zero = tl.load(zero_rows + group, mask=n_live[:, None], other=0).to(tl.int32)
            zero_pair = _zero_pair(zero)
            scale = tl.load(scale_rows + group, mask=n_live[:, None], other=0.0)
        else:
            zero = tl.zeros(n_live[:, None].shape, tl.int32)
            zero_pair = _zero_pair(zero)
            scale = tl.full(n_live[:, None].shape, 1.0, tl.float32)
        return zero, zero_pair, scale

    @triton.jit
    def _row_kernel(x_ptr, q_ptr, scale_ptr, zero_ptr, bias_ptr, out_ptr, parts_ptr, count_ptr, M, N, K, x_stride,
                    k_per_split, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                    SPLITS: tl.constexpr, HAS_BIAS: tl.constexpr, PDL: tl.constexpr, KIND: tl.constexpr,
                    ASM: tl.constexpr, UNSCALE: tl.constexpr, GROUP: tl.constexpr = 0,
                    GROUP_MAJOR: tl.constexpr = False, PREFETCH: tl.constexpr = False, STAGES: tl.constexpr = None):
        # out[0, n] = sum over k of x[k] * w[n, k] (+ bias[n]), this program's split of K (gemv.store_tile);
        # w = (q - zero) * scale per group (int4) or q * scale per row (int8, fp8). Words: 8 weights each (int4: an
        # int32 of packed bytes; int8 and e4m3: an int64). An int4 tile lies inside one group (BLOCK_K divides
        # GROUP): one zero and scale per row and tile. STAGES, PREFETCH: see linear.
        pdl.wait_then_release(PDL)
        rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        split = tl.program_id(1)
        k_start = split * k_per_split
        k_end = tl.minimum(k_start + k_per_split, K)
        n_live = rn < N
        WORDS: tl.constexpr = BLOCK_K // 8
        if KIND == "int4":
            words = q_ptr.to(tl.pointer_type(tl.int32)) + rn[:, None].to(tl.int64) * (K // 8)  # (BLOCK_N, 1)
            scale_rows, zero_rows = _group_rows(scale_ptr, zero_ptr, rn, K, GROUP, GROUP_MAJOR)
        else:
            words = q_ptr.to(tl.pointer_type(tl.int64)) + rn[:, None].to(tl.int64) * (K // 8)
            scale_rows, zero_rows = scale_ptr, zero_ptr  # unused: one scale per row, at the end
        acc = tl.zeros((BLOCK_N, WORDS), tl.float32)
        if PREFETCH:  # the next tile's loads issued before this one's FMAs (the last tile read twice: no masks)
            k_first = tl.minimum(k_start, K - BLOCK_K)
            w = _weights(words, k_first, n_live, WORDS)
            zero, zero_pair, scale = _group(scale_rows, zero_rows, k_first, N, n_live, GROUP, GROUP_MAJOR, KIND)
        for k in tl.range(k_start, k_end, BLOCK_K, num_stages=STAGES):
            if PREFETCH:
                w_k, zero_k, zero_pair_k, scale_k = w, zero, zero_pair, scale
                k_next = tl.minimum(k + BLOCK_K, k_end - BLOCK_K)
                w = _weights(words, k_next, n_live, WORDS)
                zero, zero_pair, scale = _group(scale_rows, zero_rows, k_next, N, n_live, GROUP, GROUP_MAJOR, KIND)
                x0, x1, x2, x3 = _x_words(x_ptr, k, WORDS)
            else:
                w_k = _weights(words, k, n_live, WORDS)
                x0, x1, x2, x3 = _x_words(x_ptr, k, WORDS)
                zero_k, zero_pair_k, scale_k = _group(scale_rows, zero_rows, k, N, n_live, GROUP, GROUP_MAJOR, KIND)
            acc += _tile_sums(w_k, x0, x1, x2, x3, zero_k, zero_pair_k, KIND, ASM) * scale_k
        total = tl.sum(acc, axis=1)
        if KIND != "int4":
            total *= tl.load(scale_ptr + rn, mask=n_live, other=0.0)
        total *= UNSCALE
        gemv.store_tile(total[None, :], bias_ptr, out_ptr, parts_ptr, count_ptr, tl.arange(0, 1), rn, M, N, SPLITS,
                        HAS_BIAS)


def linear(kind: str, x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None,
           bias: torch.Tensor | None, launch: tuple) -> torch.Tensor:
    """kind int4, int8 or fp8; x (1, K) float16; qweight (N, K/2) uint8 (int4) or (N, K) int8 / e4m3 bytes; scales
    float32 (N, K/g) with zeros uint8 (int4) or (N,) -> (1, N) float16. int4's scales and zeros are read row by row
    or, when both are the transposed views of (K/g, N) tensors (group_major), a group's rows side by side.
    launch: (BLOCK_N, BLOCK_K, splits, warps[, stages, prefetch]); BLOCK_K (a multiple of 8) divides K and int4's
    group: the kernel reads whole tiles. stages > 1: the compiler's pipeline of the loop's loads (asynchronous
    copies through shared memory); prefetch: the next tile's loads issued before this tile's sums, in registers."""
    N, K = qweight.shape[0], x.shape[1]
    group = K // scales.shape[1] if kind == "int4" else K
    block_n, block_k, splits, warps, stages, prefetch = (*launch, 1, False) if len(launch) == 4 else launch
    if x.shape[0] != 1 or x.dtype != torch.float16 or group % block_k or K % block_k or block_k % 8:
        raise ValueError(f"row_gemv takes one float16 row and BLOCK_K (a multiple of 8) dividing K and int4's group, "
                         f"got {tuple(x.shape)} {x.dtype}, BLOCK_K {block_k}, K {K}, group {group}")
    weights = (qweight, scales, zeros if zeros is not None else scales)
    extra = {"GROUP": group, "GROUP_MAJOR": group_major(scales, zeros)} if kind == "int4" else {}
    return gemv.split_k(_row_kernel, x, weights, bias, N, (1, block_n, block_k, splits, warps), KIND=kind,
                        ASM=PTX[kind], UNSCALE=UNSCALE[kind], STAGES=stages if stages > 1 else None, PREFETCH=prefetch,
                        **extra)


def to_group_major(scales: torch.Tensor, zeros: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int4's (N, K/g) scales and zeros, the same values stored group by group: views of (K/g, N) tensors."""
    return scales.t().contiguous().t(), zeros.t().contiguous().t()


def group_major(scales: torch.Tensor, zeros: torch.Tensor) -> bool:
    """Whether int4's (N, K/g) scales and zeros are both transposed views of (K/g, N) tensors (see linear); False
    for the stored row-by-row layout. Anything else is refused."""
    n, groups = scales.shape
    if all(t.stride() == (groups, 1) for t in (scales, zeros)) or groups == 1:  # one group: the same N values
        return False
    if all(t.stride() == (1, n) for t in (scales, zeros)):
        return True
    raise ValueError(f"int4 scales and zeros must both be row by row (N, K/g) or both transposed views of (K/g, N), "
                     f"got strides {scales.stride()} and {zeros.stride()}")
