// Fused exact full-vocabulary KL(p || q) per token (cgpo-spec section 6.2).
// Compiled after common.cuh (the host concatenates the sources).
//
// p = softmax(zp[i]) (policy), q = softmax(zq[i]) (reference).
// forward:  kl[i] = sum_v p_v (log p_v - log q_v), plus lse_p[i], lse_q[i]
// backward: grad_zp[i, v] = g[i] * p_v * ((log p_v - log q_v) - kl[i]);
//           the reference gets no gradient.
//
// Single pass. With d_v = zp_v - zq_v,
//   log p_v - log q_v = d_v - (lse_p - lse_q), so
//   kl = E_p[d] - (lse_p - lse_q) = E_p[d - c] - ((lse_p - lse_q) - c)
// for any constant c. The kernel tracks, with running maxima mp and mq,
//   sp = sum exp(zp - mp), sq = sum exp(zq - mq), spd = sum exp(zp - mp) (d - c)
// and finishes in f64: kl = spd / sp - ((mp - mq - c) + log sp - log sq).
// c = d_0 (the first column's difference, or 0 if not finite) keeps the two
// terms small when the policy is close to a shifted reference, which is the
// usual case; otherwise both would be ~|c| and cancel in f32.
// Entries with zp_v = -inf have p_v = 0 and contribute nothing (even when
// zq_v = -inf too); zp_v > -inf with zq_v = -inf makes the KL +inf.

struct KlState {
    float mp, sp, spd, mq, sq, inf_flag;
};

__device__ __forceinline__ void kl_combine(KlState& a, const KlState& b) {
    const float mp = fmaxf(a.mp, b.mp);
    if (mp == -cgpo_inf()) {
        a.sp = 0.f;
        a.spd = 0.f;
    } else {
        const float ra = __expf(a.mp - mp), rb = __expf(b.mp - mp);
        a.sp = a.sp * ra + b.sp * rb;
        a.spd = a.spd * ra + b.spd * rb;
    }
    a.mp = mp;
    lse_combine(a.mq, a.sq, b.mq, b.sq);
    a.inf_flag = fmaxf(a.inf_flag, b.inf_flag);
}

__device__ __forceinline__ KlState kl_shfl(const KlState& a, int o) {
    KlState b;
    b.mp = __shfl_xor_sync(0xffffffffu, a.mp, o);
    b.sp = __shfl_xor_sync(0xffffffffu, a.sp, o);
    b.spd = __shfl_xor_sync(0xffffffffu, a.spd, o);
    b.mq = __shfl_xor_sync(0xffffffffu, a.mq, o);
    b.sq = __shfl_xor_sync(0xffffffffu, a.sq, o);
    b.inf_flag = __shfl_xor_sync(0xffffffffu, a.inf_flag, o);
    return b;
}

// Result valid on thread 0.
__device__ __forceinline__ void block_reduce_kl(KlState& st) {
    __shared__ KlState sh[CGPO_MAX_WARPS];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) kl_combine(st, kl_shfl(st, o));
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
    if (lane == 0) sh[warp] = st;
    __syncthreads();
    if (warp == 0) {
        if (lane < nw) {
            st = sh[lane];
        } else {
            st.mp = -cgpo_inf();
            st.sp = 0.f;
            st.spd = 0.f;
            st.mq = -cgpo_inf();
            st.sq = 0.f;
            st.inf_flag = 0.f;
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) kl_combine(st, kl_shfl(st, o));
    }
}

template <int MAXC>
__device__ __forceinline__ void kl_update(KlState& st, float c, const float* xp, const float* xq, int cnt) {
    const float ninf = -cgpo_inf();
    float vp = xp[0], vq = xq[0];
#pragma unroll
    for (int e = 1; e < MAXC; ++e) {
        if (e < cnt) {
            vp = fmaxf(vp, xp[e]);
            vq = fmaxf(vq, xq[e]);
        }
    }
    if (vp > st.mp) {
        const float r = __expf(st.mp - vp);
        st.sp *= r;
        st.spd *= r;
        st.mp = vp;
    }
    if (vq > st.mq) {
        st.sq *= __expf(st.mq - vq);
        st.mq = vq;
    }
#pragma unroll
    for (int e = 0; e < MAXC; ++e) {
        if (e < cnt) {
            // `!= -inf` rather than `> -inf` so that NaN logits propagate.
            if (xp[e] != ninf) {
                const float ep = __expf(xp[e] - st.mp);
                st.sp += ep;
                if (xq[e] == ninf) {
                    st.inf_flag = 1.f;
                } else {
                    st.spd += ep * ((xp[e] - xq[e]) - c);
                }
            }
            if (xq[e] != ninf) st.sq += __expf(xq[e] - st.mq);
        }
    }
}

template <int DT>
__device__ __forceinline__ void kl_fwd(const typename Dt<DT>::T* __restrict__ zp, const typename Dt<DT>::T* __restrict__ zq,
                                       const u8* __restrict__ mask, int has_mask, i64 n, i64 v, float* __restrict__ kl,
                                       float* __restrict__ lse_p, float* __restrict__ lse_q) {
    typedef Dt<DT> D;
    const i64 row = blockIdx.x;
    if (row >= n) return;
    if (row_masked(mask, has_mask, row)) {
        if (threadIdx.x == 0) {
            kl[row] = 0.f;
            lse_p[row] = 0.f;
            lse_q[row] = 0.f;
        }
        return;
    }
    const typename D::T* pr = zp + row * v;
    const typename D::T* qr = zq + row * v;
    // Every thread reads the same first column (a broadcast from cache).
    float c = D::load(pr) - D::load(qr);
    if (!(fabsf(c) < cgpo_inf())) c = 0.f;
    KlState st;
    st.mp = -cgpo_inf();
    st.sp = 0.f;
    st.spd = 0.f;
    st.mq = -cgpo_inf();
    st.sq = 0.f;
    st.inf_flag = 0.f;
    visit_row<DT, true>(pr, qr, nullptr, v, [&](i64, const float* xp, const float* xq, float*, int cnt) {
        kl_update<D::VEC>(st, c, xp, xq, cnt);
    });
    block_reduce_kl(st);
    if (threadIdx.x == 0) {
        const double lsp = log((double)st.sp), lsq = log((double)st.sq);
        const double lp = (double)st.mp + lsp, lq = (double)st.mq + lsq;
        double k;
        if (st.inf_flag != 0.f) {
            k = (double)cgpo_inf();
        } else {
            k = (double)st.spd / (double)st.sp - (((double)st.mp - (double)st.mq - (double)c) + lsp - lsq);
        }
        kl[row] = (float)k;
        lse_p[row] = (float)lp;
        lse_q[row] = (float)lq;
    }
}

template <int DT>
__device__ __forceinline__ void kl_bwd(const typename Dt<DT>::T* __restrict__ zp, const typename Dt<DT>::T* __restrict__ zq,
                                       const float* __restrict__ lse_p, const float* __restrict__ lse_q,
                                       const float* __restrict__ kl, const float* __restrict__ g,
                                       const u8* __restrict__ mask, int has_mask, i64 n, i64 v,
                                       typename Dt<DT>::T* __restrict__ grad) {
    typedef Dt<DT> D;
    const i64 row = blockIdx.x;
    if (row >= n) return;
    typename D::T* gr = grad + row * v;
    if (row_masked(mask, has_mask, row)) {
        for (i64 j = threadIdx.x; j < v; j += blockDim.x) D::store(gr + j, 0.f);
        return;
    }
    const typename D::T* pr = zp + row * v;
    const typename D::T* qr = zq + row * v;
    const float lp = lse_p[row];
    const float gi = g[row];
    // (log p - log q) - kl = d - k with k = (lse_p - lse_q) + kl, formed in f64.
    const float k = (float)(((double)lp - (double)lse_q[row]) + (double)kl[row]);
    const float ninf = -cgpo_inf();
    visit_row<DT, true>(pr, qr, gr, v, [&](i64, const float* xp, const float* xq, float* out, int cnt) {
#pragma unroll
        for (int e = 0; e < D::VEC; ++e) {
            if (e < cnt) {
                // p_v = 0 exactly when zp_v = -inf: no gradient, and no
                // 0 * inf = NaN when zq_v is -inf as well.
                out[e] = xp[e] == ninf ? 0.f : gi * __expf(xp[e] - lp) * ((xp[e] - xq[e]) - k);
            }
        }
    });
}

#define CGPO_KL(SUFFIX, DT)                                                                                    \
    extern "C" __global__ void CGPO_LAUNCH_BOUNDS                                                         \
        kl_fwd_##SUFFIX(const Dt<DT>::T* zp, const Dt<DT>::T* zq, const u8* mask, int has_mask, i64 n, i64 v, \
                        float* kl, float* lse_p, float* lse_q) {                                              \
        kl_fwd<DT>(zp, zq, mask, has_mask, n, v, kl, lse_p, lse_q);                                            \
    }                                                                                                          \
    extern "C" __global__ void CGPO_LAUNCH_BOUNDS                                                         \
        kl_bwd_##SUFFIX(const Dt<DT>::T* zp, const Dt<DT>::T* zq, const float* lse_p, const float* lse_q,     \
                        const float* kl, const float* g, const u8* mask, int has_mask, i64 n, i64 v,           \
                        Dt<DT>::T* grad) {                                                                     \
        kl_bwd<DT>(zp, zq, lse_p, lse_q, kl, g, mask, has_mask, n, v, grad);                                   \
    }

CGPO_KL(f32, 0)
CGPO_KL(bf16, 1)
CGPO_KL(f16, 2)
