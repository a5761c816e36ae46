// Fused per-token log-probabilities (cgpo-spec section 6.1).
// Compiled after common.cuh (the host concatenates the sources).
//
// forward:  logp[i] = z[i, y[i]] - logsumexp(z[i, :]), lse[i] saved for backward
// backward: grad_z[i, v] = g[i] * ([v == y[i]] - exp(z[i, v] - lse[i]))
//
// Masked rows (mask[i] == 0) are not read: outputs and gradients are 0.
// A target id >= V writes NaN for the row and flags it in *err; it never
// reads out of bounds.

template <int DT>
__device__ __forceinline__ void logprob_fwd(const typename Dt<DT>::T* __restrict__ z, const u32* __restrict__ y,
                                            const u8* __restrict__ mask, int has_mask, i64 n, i64 v,
                                            float* __restrict__ logp, float* __restrict__ lse, u32* err) {
    typedef Dt<DT> D;
    const i64 row = blockIdx.x;
    if (row >= n) return;
    // Every thread reads the same mask byte and target, so these exits are
    // uniform across the block and the reduction below stays valid.
    if (row_masked(mask, has_mask, row)) {
        if (threadIdx.x == 0) {
            logp[row] = 0.f;
            lse[row] = 0.f;
        }
        return;
    }
    const u32 t = y[row];
    if ((i64)t >= v) {
        if (threadIdx.x == 0) {
            logp[row] = cgpo_nan();
            lse[row] = cgpo_nan();
            flag_bad_row(err, row);
        }
        return;
    }
    const typename D::T* zr = z + row * v;
    float m = -cgpo_inf(), s = 0.f;
    visit_row<DT, false>(zr, zr, nullptr, v, [&](i64, const float* xa, const float*, float*, int cnt) {
        lse_update<D::VEC>(m, s, xa, cnt);
    });
    block_reduce_lse(m, s);
    if (threadIdx.x == 0) {
        // f64 finish: m can be ~1e4 while log(s) is O(log V); adding them in
        // f32 first would lose the small part before the subtraction.
        const double l = (double)m + log((double)s);
        logp[row] = (float)((double)D::load(zr + t) - l);
        lse[row] = (float)l;
    }
}

template <int DT>
__device__ __forceinline__ void logprob_bwd(const typename Dt<DT>::T* __restrict__ z, const u32* __restrict__ y,
                                            const float* __restrict__ lse, const float* __restrict__ g,
                                            const u8* __restrict__ mask, int has_mask, i64 n, i64 v,
                                            typename Dt<DT>::T* __restrict__ grad, u32* err) {
    typedef Dt<DT> D;
    const i64 row = blockIdx.x;
    if (row >= n) return;
    typename D::T* gr = grad + row * v;
    const bool masked = row_masked(mask, has_mask, row);
    const u32 t = masked ? 0u : y[row];
    const bool bad = !masked && (i64)t >= v;
    if (masked || bad) {
        // The gradient tensor is written in full: 0 for masked rows, NaN for
        // rows whose target is out of range.
        const float fill = masked ? 0.f : cgpo_nan();
        if (bad && threadIdx.x == 0) flag_bad_row(err, row);
        for (i64 j = threadIdx.x; j < v; j += blockDim.x) D::store(gr + j, fill);
        return;
    }
    const typename D::T* zr = z + row * v;
    const float l = lse[row];
    const float gi = g[row];
    const i64 ti = (i64)t;
    visit_row<DT, false>(zr, zr, gr, v, [&](i64 j, const float* xa, const float*, float* out, int cnt) {
#pragma unroll
        for (int e = 0; e < D::VEC; ++e) {
            if (e < cnt) {
                const float onehot = (j + e == ti) ? 1.f : 0.f;
                out[e] = gi * (onehot - __expf(xa[e] - l));
            }
        }
    });
}

#define CGPO_LOGPROB(SUFFIX, DT)                                                                              \
    extern "C" __global__ void CGPO_LAUNCH_BOUNDS                                                        \
        logprob_fwd_##SUFFIX(const Dt<DT>::T* z, const u32* y, const u8* mask, int has_mask, i64 n, i64 v,  \
                             float* logp, float* lse, u32* err) {                                            \
        logprob_fwd<DT>(z, y, mask, has_mask, n, v, logp, lse, err);                                         \
    }                                                                                                         \
    extern "C" __global__ void CGPO_LAUNCH_BOUNDS                                                        \
        logprob_bwd_##SUFFIX(const Dt<DT>::T* z, const u32* y, const float* lse, const float* g,             \
                             const u8* mask, int has_mask, i64 n, i64 v, Dt<DT>::T* grad, u32* err) {        \
        logprob_bwd<DT>(z, y, lse, g, mask, has_mask, n, v, grad, err);                                      \
    }

CGPO_LOGPROB(f32, 0)
CGPO_LOGPROB(bf16, 1)
CGPO_LOGPROB(f16, 2)
