// Shared helpers for the fused per-token kernels (cgpo-spec section 6).
//
// The host prepends this file to logprob.cu and kl.cu and compiles the result
// with NVRTC. It deliberately includes no header: NVRTC cannot find
// cuda_fp16.h / cuda_bf16.h without a toolkit include path, so half and
// bfloat16 values are converted with bit operations and inline PTX instead.
//
// Layout: one thread block per row of a row-major [N, V] tensor. Each row is
// read with 16-byte vector loads (4 f32 or 8 bf16/f16 values) between a
// scalar head (up to the first 16-byte boundary) and a scalar tail, so odd V
// and unaligned row starts are handled. Everything accumulates in f32; the
// per-row finish runs once in f64 on thread 0.

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef long long i64;
typedef unsigned long long u64;

#define CGPO_MAX_WARPS 32
// The host launches CGPO_BLOCK (256) threads per block. Asking for 4 resident
// blocks caps registers at 64 per thread, so an SM keeps 1024+ threads of
// loads in flight, which a bandwidth-bound kernel needs.
#define CGPO_BLOCK 256
#define CGPO_LAUNCH_BOUNDS __launch_bounds__(CGPO_BLOCK, 4)

__device__ __forceinline__ float cgpo_inf() { return __int_as_float(0x7f800000); }
__device__ __forceinline__ float cgpo_nan() { return __int_as_float(0x7fc00000); }

__device__ __forceinline__ float bf16_bits_to_f32(u32 b) { return __uint_as_float(b << 16); }

__device__ __forceinline__ u16 f32_to_bf16_bits(float f) {
    u32 u = __float_as_uint(f);
    // NaN must stay NaN: rounding could carry a NaN payload into infinity.
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)((u >> 16) | 0x0040u);
    // Round to nearest, ties to even.
    u += 0x7fffu + ((u >> 16) & 1u);
    return (u16)(u >> 16);
}

__device__ __forceinline__ float f16_bits_to_f32(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ u16 f32_to_f16_bits(float f) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

// Per-dtype storage type, scalar load/store and 16-byte pack/unpack.
// DT: 0 = f32, 1 = bf16, 2 = f16 (bf16/f16 are stored as their u16 bits).
template <int DT> struct Dt;

template <> struct Dt<0> {
    typedef float T;
    static constexpr int VEC = 4;
    __device__ static __forceinline__ float load(const T* p) { return *p; }
    __device__ static __forceinline__ void store(T* p, float x) { *p = x; }
    __device__ static __forceinline__ void unpack(uint4 w, float* x) {
        x[0] = __uint_as_float(w.x);
        x[1] = __uint_as_float(w.y);
        x[2] = __uint_as_float(w.z);
        x[3] = __uint_as_float(w.w);
    }
    __device__ static __forceinline__ uint4 pack(const float* x) {
        uint4 w;
        w.x = __float_as_uint(x[0]);
        w.y = __float_as_uint(x[1]);
        w.z = __float_as_uint(x[2]);
        w.w = __float_as_uint(x[3]);
        return w;
    }
};

// Shared by bf16 and f16: 8 values in a uint4, lower address in the low half.
template <int DT> struct Dt16 {
    typedef u16 T;
    static constexpr int VEC = 8;
    __device__ static __forceinline__ float cvt(u32 b) {
        return DT == 1 ? bf16_bits_to_f32(b) : f16_bits_to_f32((u16)b);
    }
    __device__ static __forceinline__ u32 bits(float x) {
        return DT == 1 ? (u32)f32_to_bf16_bits(x) : (u32)f32_to_f16_bits(x);
    }
    __device__ static __forceinline__ float load(const T* p) { return cvt(*p); }
    __device__ static __forceinline__ void store(T* p, float x) { *p = (u16)bits(x); }
    __device__ static __forceinline__ void unpack2(u32 w, float* x) {
        x[0] = cvt(w & 0xffffu);
        x[1] = cvt(w >> 16);
    }
    __device__ static __forceinline__ void unpack(uint4 w, float* x) {
        unpack2(w.x, x);
        unpack2(w.y, x + 2);
        unpack2(w.z, x + 4);
        unpack2(w.w, x + 6);
    }
    __device__ static __forceinline__ u32 pack2(const float* x) { return bits(x[0]) | (bits(x[1]) << 16); }
    __device__ static __forceinline__ uint4 pack(const float* x) {
        uint4 w;
        w.x = pack2(x);
        w.y = pack2(x + 2);
        w.z = pack2(x + 4);
        w.w = pack2(x + 6);
        return w;
    }
};
template <> struct Dt<1> : Dt16<1> {};
template <> struct Dt<2> : Dt16<2> {};

// Visits one row (or two rows of the same length, e.g. policy and reference
// logits) in chunks: f(j, xa, xb, y, cnt) sees elements [j, j + cnt) as f32
// in xa / xb and, when `out` is not null, fills y[0..cnt) which is stored to
// out[j..j + cnt). cnt is VEC on the vector path and 1 on the scalar head and
// tail. The vector path needs all pointers to share their offset modulo 16
// bytes; otherwise the whole row goes through the scalar path.
template <int DT, bool TWO, typename F>
__device__ __forceinline__ void visit_row(const typename Dt<DT>::T* __restrict__ a,
                                          const typename Dt<DT>::T* __restrict__ b,
                                          typename Dt<DT>::T* __restrict__ out, i64 v, F&& f) {
    typedef Dt<DT> D;
    typedef typename D::T T;
    constexpr int VEC = D::VEC;
    const u64 pa = (u64)a;
    const u64 pb = TWO ? (u64)b : pa;
    const u64 po = out ? (u64)out : pa;
    i64 head = v;
    i64 nvec = 0;
    if ((((pa ^ pb) | (pa ^ po)) & 15u) == 0) {
        head = (i64)(((16u - (pa & 15u)) & 15u) / sizeof(T));
        if (head > v) head = v;
        nvec = (v - head) / VEC;
    }
    const i64 tail = head + nvec * VEC;
    const i64 nt = blockDim.x;
    float xa[VEC], xb[VEC], y[VEC];
    for (i64 j = threadIdx.x; j < head; j += nt) {
        xa[0] = D::load(a + j);
        if (TWO) xb[0] = D::load(b + j);
        f(j, xa, xb, y, 1);
        if (out) D::store(out + j, y[0]);
    }
    const uint4* va = reinterpret_cast<const uint4*>(a + head);
    const uint4* vb = reinterpret_cast<const uint4*>((TWO ? b : a) + head);
    uint4* vo = out ? reinterpret_cast<uint4*>(out + head) : nullptr;
#pragma unroll 2
    for (i64 k = threadIdx.x; k < nvec; k += nt) {
        D::unpack(va[k], xa);
        if (TWO) D::unpack(vb[k], xb);
        f(head + k * VEC, xa, xb, y, VEC);
        if (out) vo[k] = D::pack(y);
    }
    for (i64 j = tail + threadIdx.x; j < v; j += nt) {
        xa[0] = D::load(a + j);
        if (TWO) xb[0] = D::load(b + j);
        f(j, xa, xb, y, 1);
        if (out) D::store(out + j, y[0]);
    }
}

// Online log-sum-exp state (m = running max, s = sum exp(x - m)).
// One rescale per chunk instead of per element.
template <int MAXC>
__device__ __forceinline__ void lse_update(float& m, float& s, const float* x, int cnt) {
    float vm = x[0];
#pragma unroll
    for (int e = 1; e < MAXC; ++e)
        if (e < cnt) vm = fmaxf(vm, x[e]);
    if (vm > m) {
        // exp(-inf) = 0 also covers the first chunk (m = -inf, s = 0).
        s *= __expf(m - vm);
        m = vm;
    }
    // All values so far are -inf: they add nothing, and x - m would be NaN.
    if (m == -cgpo_inf()) return;
#pragma unroll
    for (int e = 0; e < MAXC; ++e)
        if (e < cnt) s += __expf(x[e] - m);
}

__device__ __forceinline__ void lse_combine(float& m, float& s, float m2, float s2) {
    const float mn = fmaxf(m, m2);
    if (mn == -cgpo_inf()) {
        s = 0.f;
    } else {
        s = s * __expf(m - mn) + s2 * __expf(m2 - mn);
    }
    m = mn;
}

// Block-wide reduction of (m, s); the result is valid on thread 0.
// blockDim.x must be a multiple of 32 (the host launches 256 threads).
__device__ __forceinline__ void block_reduce_lse(float& m, float& s) {
    __shared__ float sh_m[CGPO_MAX_WARPS];
    __shared__ float sh_s[CGPO_MAX_WARPS];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float m2 = __shfl_xor_sync(0xffffffffu, m, o);
        const float s2 = __shfl_xor_sync(0xffffffffu, s, o);
        lse_combine(m, s, m2, s2);
    }
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
    if (lane == 0) {
        sh_m[warp] = m;
        sh_s[warp] = s;
    }
    __syncthreads();
    if (warp == 0) {
        m = lane < nw ? sh_m[lane] : -cgpo_inf();
        s = lane < nw ? sh_s[lane] : 0.f;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const float m2 = __shfl_xor_sync(0xffffffffu, m, o);
            const float s2 = __shfl_xor_sync(0xffffffffu, s, o);
            lse_combine(m, s, m2, s2);
        }
    }
}

// Records the smallest offending row: the flag holds u32::MAX - row so that
// atomicMax keeps the first row and 0 means "no error".
__device__ __forceinline__ void flag_bad_row(u32* err, i64 row) { atomicMax(err, 0xffffffffu - (u32)row); }

__device__ __forceinline__ bool row_masked(const u8* mask, int has_mask, i64 row) {
    return has_mask && mask[row] == 0;
}
