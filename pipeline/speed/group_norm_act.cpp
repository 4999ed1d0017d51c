// GroupNorm followed by SiLU (or by nothing) on channels-last float32 CPU activations, forward and backward in one
// kernel each. Loaded by group_norm_act.py; the math and the reasons are in its docstring.
//
// x is viewed as [N, L, C] (L = H * W, channels innermost); G groups of D = C / G channels; M = D * L.
//   forward:  mu, rstd per (n, g);  z = (x - mu) * rstd * w + b = A_c x + B_c;  y = act(z)
//   backward: g = dy * act'(z);  with S1_c = sum_l g, S2_c = sum_l g (x - mu) (per n; centred, so that no
//             difference of large sums loses digits when |mu| >> sigma),
//             ds = sum_{c in g} w_c S2_c,  db = sum_{c in g} w_c S1_c,
//             c2 = -ds rstd^3 / M,  c3 = -mu c2 - rstd db / M,
//             dx = A_c g + c2 x + c3;  dw_c = sum_n S2_c rstd,  db_c = sum_n S1_c.
// Work is split over n only and every sum runs in a fixed order, so results do not depend on the thread count.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

// One clone per instruction set, chosen when the library loads: the loops below vectorise at each one's width.
#define CLONES __attribute__((target_clones("avx512f", "avx2,fma", "default")))
#define INLINE inline __attribute__((always_inline))

constexpr int64_t kChunk = 64;  // rows summed in float before the sum moves into double

// exp(v) in float: v = n ln2 + r, |r| <= ln2 / 2; exp(r) by its degree-7 Taylor polynomial (relative error < 2e-7
// on that range), times 2^n built in the exponent bits. Branch-free so that it vectorises; clamped so 2^n is normal.
INLINE float exp_approx(float v) {
  v = v < -87.0f ? -87.0f : (v > 88.0f ? 88.0f : v);
  const float round = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer held in the low mantissa bits
  float t = v * 1.44269504088896341f + round;
  float n = t - round;
  float r = v - n * 0.693145751953125f - n * 1.428606765330187e-06f;  // ln 2 in two parts, the first exact
  float p = 1.98412698e-4f;                                             // 1/7!
  p = p * r + 1.38888889e-3f;
  p = p * r + 8.33333333e-3f;
  p = p * r + 4.16666667e-2f;
  p = p * r + 1.66666667e-1f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  int32_t bits;
  std::memcpy(&bits, &t, 4);
  int32_t e = (bits - 0x4B400000 + 127) << 23;  // the integer n from t's mantissa, moved into an exponent field
  float scale;
  std::memcpy(&scale, &e, 4);
  return p * scale;
}

INLINE float sigmoid(float z) { return 1.0f / (1.0f + exp_approx(-z)); }

// Per-channel sums over the L rows of one sample: out1_c = sum_l a, out2_c = sum_l a (b - mu_c) (b null: out2
// untouched). Rows go in chunks summed in float, each chunk's sums added into double.
CLONES void channel_sums(const float* a, const float* b, const float* mu, int64_t L, int64_t C, double* out1,
                         double* out2, float* acc1, float* acc2) {
  std::fill(out1, out1 + C, 0.0);
  if (b) std::fill(out2, out2 + C, 0.0);
  for (int64_t l0 = 0; l0 < L; l0 += kChunk) {
    const int64_t l1 = std::min(L, l0 + kChunk);
    for (int64_t c = 0; c < C; ++c) acc1[c] = 0.0f, acc2[c] = 0.0f;
    for (int64_t l = l0; l < l1; ++l) {
      const float* ar = a + l * C;
      if (b) {
        const float* br = b + l * C;
        for (int64_t c = 0; c < C; ++c) acc1[c] += ar[c], acc2[c] += ar[c] * (br[c] - mu[c]);
      } else {
        for (int64_t c = 0; c < C; ++c) acc1[c] += ar[c];
      }
    }
    for (int64_t c = 0; c < C; ++c) out1[c] += acc1[c];
    if (b)
      for (int64_t c = 0; c < C; ++c) out2[c] += acc2[c];
  }
}

// Per-channel sums of (x - mu_c)^2 over the rows, mu given per channel (its group's mean).
CLONES void centred_squares(const float* x, const float* mu, int64_t L, int64_t C, double* out, float* acc) {
  std::fill(out, out + C, 0.0);
  for (int64_t l0 = 0; l0 < L; l0 += kChunk) {
    const int64_t l1 = std::min(L, l0 + kChunk);
    for (int64_t c = 0; c < C; ++c) acc[c] = 0.0f;
    for (int64_t l = l0; l < l1; ++l) {
      const float* xr = x + l * C;
      for (int64_t c = 0; c < C; ++c) {
        const float d = xr[c] - mu[c];
        acc[c] += d * d;
      }
    }
    for (int64_t c = 0; c < C; ++c) out[c] += acc[c];
  }
}

// y = act(A x + B), row by row.
CLONES void affine_act(const float* x, const float* A, const float* B, int64_t L, int64_t C, bool silu, float* y) {
  for (int64_t l = 0; l < L; ++l) {
    const float* xr = x + l * C;
    float* yr = y + l * C;
    if (silu) {
      for (int64_t c = 0; c < C; ++c) {
        const float z = A[c] * xr[c] + B[c];
        yr[c] = z * sigmoid(z);
      }
    } else {
      for (int64_t c = 0; c < C; ++c) yr[c] = A[c] * xr[c] + B[c];
    }
  }
}

// g = dy * silu'(z), z = A x + B; silu'(z) = s (1 + z (1 - s)), s = sigmoid(z).
CLONES void silu_grad(const float* dy, const float* x, const float* A, const float* B, int64_t L, int64_t C,
                      float* g) {
  for (int64_t l = 0; l < L; ++l) {
    const float* dr = dy + l * C;
    const float* xr = x + l * C;
    float* gr = g + l * C;
    for (int64_t c = 0; c < C; ++c) {
      const float z = A[c] * xr[c] + B[c];
      const float s = sigmoid(z);
      gr[c] = dr[c] * s * (1.0f + z * (1.0f - s));
    }
  }
}

// dx = A_c g + c2_c x + c3_c (c2, c3 given per channel: their group's values).
CLONES void input_grad(const float* g, const float* x, const float* A, const float* c2, const float* c3, int64_t L,
                       int64_t C, float* dx) {
  for (int64_t l = 0; l < L; ++l) {
    const float* gr = g + l * C;
    const float* xr = x + l * C;
    float* dr = dx + l * C;
    for (int64_t c = 0; c < C; ++c) dr[c] = A[c] * gr[c] + c2[c] * xr[c] + c3[c];
  }
}

void check(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b, int64_t G) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == torch::kFloat && x.dim() == 4 &&
                  x.is_contiguous(torch::MemoryFormat::ChannelsLast),
              "group_norm_act: x must be a 4-D channels-last float32 CPU tensor");
  TORCH_CHECK(G > 0 && x.size(1) % G == 0, "group_norm_act: channels not divisible by groups");
  TORCH_CHECK(w.is_contiguous() && b.is_contiguous() && w.numel() == x.size(1) && b.numel() == x.size(1) &&
                  w.scalar_type() == torch::kFloat && b.scalar_type() == torch::kFloat,
              "group_norm_act: weight and bias must be contiguous float32 of size C");
}

// A_c = rstd w_c and B_c = b_c - mu A_c for one sample, from its groups' mu, rstd.
void affine(const float* w, const float* b, const float* mu, const float* rstd, int64_t C, int64_t D, float* A,
            float* B, float* mu_c) {
  for (int64_t c = 0; c < C; ++c) {
    const int64_t g = c / D;
    A[c] = rstd[g] * w[c];
    B[c] = b[c] - mu[g] * A[c];
    if (mu_c) mu_c[c] = mu[g];
  }
}

}  // namespace

// Returns y, mean [N, G], rstd [N, G] (float32, as ATen's native_group_norm).
std::vector<torch::Tensor> forward(torch::Tensor x, torch::Tensor w, torch::Tensor b, int64_t G, double eps,
                                   bool silu) {
  check(x, w, b, G);
  const int64_t N = x.size(0), C = x.size(1), L = x.size(2) * x.size(3), D = C / G;
  auto y = torch::empty_like(x, torch::MemoryFormat::ChannelsLast);
  auto mean = torch::empty({N, G}, x.options());
  auto rstd = torch::empty({N, G}, x.options());
  const float *xp = x.data_ptr<float>(), *wp = w.data_ptr<float>(), *bp = b.data_ptr<float>();
  float *yp = y.data_ptr<float>(), *mp = mean.data_ptr<float>(), *rp = rstd.data_ptr<float>();
  at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
    std::vector<double> s(C), q(C);
    std::vector<float> acc1(C), acc2(C), A(C), B(C), mu_c(C);
    for (int64_t n = n0; n < n1; ++n) {
      const float* xn = xp + n * L * C;
      channel_sums(xn, nullptr, nullptr, L, C, s.data(), nullptr, acc1.data(), acc2.data());
      for (int64_t g = 0; g < G; ++g) {
        double t = 0.0;
        for (int64_t c = g * D; c < (g + 1) * D; ++c) t += s[c];
        mp[n * G + g] = static_cast<float>(t / static_cast<double>(D * L));
      }
      for (int64_t c = 0; c < C; ++c) mu_c[c] = mp[n * G + c / D];
      centred_squares(xn, mu_c.data(), L, C, q.data(), acc1.data());  // two passes: no E[x^2] - E[x]^2 cancellation
      for (int64_t g = 0; g < G; ++g) {
        double t = 0.0;
        for (int64_t c = g * D; c < (g + 1) * D; ++c) t += q[c];
        rp[n * G + g] = static_cast<float>(1.0 / std::sqrt(t / static_cast<double>(D * L) + eps));
      }
      affine(wp, bp, mp + n * G, rp + n * G, C, D, A.data(), B.data(), nullptr);
      affine_act(xn, A.data(), B.data(), L, C, silu, yp + n * L * C);
    }
  });
  return {y, mean, rstd};
}

// Returns dx, dw, db.
std::vector<torch::Tensor> backward(torch::Tensor dy, torch::Tensor x, torch::Tensor mean, torch::Tensor rstd,
                                    torch::Tensor w, torch::Tensor b, int64_t G, bool silu) {
  check(x, w, b, G);
  TORCH_CHECK(dy.sizes() == x.sizes() && dy.scalar_type() == torch::kFloat &&
                  dy.is_contiguous(torch::MemoryFormat::ChannelsLast),
              "group_norm_act: dy must match x (channels-last float32)");
  const int64_t N = x.size(0), C = x.size(1), L = x.size(2) * x.size(3), D = C / G;
  auto dx = torch::empty_like(x, torch::MemoryFormat::ChannelsLast);
  auto s1 = torch::empty({N, C}, x.options().dtype(torch::kDouble));
  auto s2 = torch::empty({N, C}, x.options().dtype(torch::kDouble));
  const float *dyp = dy.data_ptr<float>(), *xp = x.data_ptr<float>(), *wp = w.data_ptr<float>();
  const float *bp = b.data_ptr<float>(), *mp = mean.data_ptr<float>(), *rp = rstd.data_ptr<float>();
  float* dxp = dx.data_ptr<float>();
  double *s1p = s1.data_ptr<double>(), *s2p = s2.data_ptr<double>();
  at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
    std::vector<float> acc1(C), acc2(C), A(C), B(C), mu_c(C), c2(C), c3(C), gbuf(silu ? L * C : 0);
    for (int64_t n = n0; n < n1; ++n) {
      const float *xn = xp + n * L * C, *g = dyp + n * L * C;
      affine(wp, bp, mp + n * G, rp + n * G, C, D, A.data(), B.data(), mu_c.data());
      if (silu) {  // g = dy * silu'(z), kept for the second pass (one sample: L * C floats, cache-sized)
        silu_grad(g, xn, A.data(), B.data(), L, C, gbuf.data());
        g = gbuf.data();
      }
      double *S1 = s1p + n * C, *S2 = s2p + n * C;
      channel_sums(g, xn, mu_c.data(), L, C, S1, S2, acc1.data(), acc2.data());
      const double M = static_cast<double>(D * L);
      for (int64_t gi = 0; gi < G; ++gi) {
        double ds = 0.0, db = 0.0;
        for (int64_t c = gi * D; c < (gi + 1) * D; ++c) ds += wp[c] * S2[c], db += wp[c] * S1[c];
        const double mu = mp[n * G + gi], r = rp[n * G + gi];
        const double k2 = -ds * r * r * r / M, k3 = -mu * k2 - r * db / M;
        for (int64_t c = gi * D; c < (gi + 1) * D; ++c) c2[c] = static_cast<float>(k2), c3[c] = static_cast<float>(k3);
      }
      input_grad(g, xn, A.data(), c2.data(), c3.data(), L, C, dxp + n * L * C);
    }
  });
  // dw_c = sum_n S2 rstd, db_c = sum_n S1: over n in order, after the parallel part.
  auto dw = torch::zeros({C}, x.options().dtype(torch::kDouble));
  auto db = torch::zeros({C}, x.options().dtype(torch::kDouble));
  double *dwp = dw.data_ptr<double>(), *dbp = db.data_ptr<double>();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      dwp[c] += s2p[n * C + c] * rp[n * G + c / D];
      dbp[c] += s1p[n * C + c];
    }
  return {dx, dw.to(torch::kFloat), db.to(torch::kFloat)};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "GroupNorm (+ SiLU) forward, channels-last float32 CPU");
  m.def("backward", &backward, "GroupNorm (+ SiLU) backward, channels-last float32 CPU");
}
