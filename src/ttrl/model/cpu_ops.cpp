// The model's linear, LayerNorm and GELU layers for float32 inference on the CPU (see cpu_ops.py).
//
// Beam search runs these layers on 32 to 64 rows thousands of times per decision. There torch's
// matrix product packs the weight anew on every call and its elementwise ops pay a fixed cost per
// call; here a weight is packed once, into panels of 64 output columns, and each op is one loop.
// Built with AVX-512 only: available() is false elsewhere, and the layers use torch's ops.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <cmath>

#if defined(__AVX512F__)
#include <immintrin.h>
#define TTRL_AVX512 1
#endif

namespace {

constexpr int64_t kPanel = 64;          // output columns per packed panel: four 16-lane registers
constexpr int64_t kRowsPerTask = 96;    // rows one thread takes in a linear (16 tiles of 6)
constexpr int64_t kGrain = 32768;       // elements per thread in the elementwise ops (torch's grain)

void check_float(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == torch::kFloat32, name,
              " must be a float32 CPU tensor");
}

#ifdef TTRL_AVX512

// out[r, 0:64] = bias + sum_k a[r, k] * panel[k, 0:64] for MR rows; k in order, one FMA each.
template <int MR>
inline void linear_tile(const float* a, int64_t k_dim, const float* panel, const float* bias,
                        float* out, int64_t ldo) {
  __m512 acc[MR][4];
  for (int j = 0; j < 4; ++j) {
    const __m512 b = _mm512_loadu_ps(bias + 16 * j);
    for (int r = 0; r < MR; ++r) acc[r][j] = b;
  }
  for (int64_t k = 0; k < k_dim; ++k) {
    const float* w = panel + k * kPanel;
    const __m512 w0 = _mm512_loadu_ps(w), w1 = _mm512_loadu_ps(w + 16);
    const __m512 w2 = _mm512_loadu_ps(w + 32), w3 = _mm512_loadu_ps(w + 48);
    for (int r = 0; r < MR; ++r) {
      const __m512 x = _mm512_set1_ps(a[r * k_dim + k]);
      acc[r][0] = _mm512_fmadd_ps(x, w0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(x, w1, acc[r][1]);
      acc[r][2] = _mm512_fmadd_ps(x, w2, acc[r][2]);
      acc[r][3] = _mm512_fmadd_ps(x, w3, acc[r][3]);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < 4; ++j) _mm512_storeu_ps(out + r * ldo + 16 * j, acc[r][j]);
}

void linear_rows(const float* a, int64_t rows, int64_t k_dim, const float* packed, int64_t panels,
                 const float* bias, float* out) {
  const int64_t n = panels * kPanel;
  for (int64_t p = 0; p < panels; ++p) {
    const float* panel = packed + p * k_dim * kPanel;
    const float* b = bias + p * kPanel;
    float* o = out + p * kPanel;
    int64_t r = 0;
    for (; r + 6 <= rows; r += 6) linear_tile<6>(a + r * k_dim, k_dim, panel, b, o + r * n, n);
    const float* ar = a + r * k_dim;
    float* orow = o + r * n;
    switch (rows - r) {
      case 5: linear_tile<5>(ar, k_dim, panel, b, orow, n); break;
      case 4: linear_tile<4>(ar, k_dim, panel, b, orow, n); break;
      case 3: linear_tile<3>(ar, k_dim, panel, b, orow, n); break;
      case 2: linear_tile<2>(ar, k_dim, panel, b, orow, n); break;
      case 1: linear_tile<1>(ar, k_dim, panel, b, orow, n); break;
      default: break;
    }
  }
}

// exp(y) for -100 <= y <= 0: y = n ln2 + f with |f| <= ln2 / 2, e^f by its Taylor series to f^6.
inline __m512 exp_nonpositive(__m512 y) {
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(y, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 f = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), y);  // ln2 in two parts
  f = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), f);
  __m512 e = _mm512_set1_ps(1.0f / 720);
  e = _mm512_fmadd_ps(e, f, _mm512_set1_ps(1.0f / 120));
  e = _mm512_fmadd_ps(e, f, _mm512_set1_ps(1.0f / 24));
  e = _mm512_fmadd_ps(e, f, _mm512_set1_ps(1.0f / 6));
  e = _mm512_fmadd_ps(e, f, _mm512_set1_ps(0.5f));
  e = _mm512_fmadd_ps(e, f, _mm512_set1_ps(1.0f));
  e = _mm512_fmadd_ps(e, f, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(e, n);
}

// x * Phi(x) with Phi(x) = (1 + erf(x / sqrt 2)) / 2 and erf by Abramowitz & Stegun 7.1.26
// (absolute error under 1.5e-7); the tail for x < 0 is computed directly, without cancellation.
// Past |x| / sqrt 2 = 10, Phi is 0 or 1 in float32: gelu(inf) = inf, and gelu(-inf) = nan as torch's.
inline __m512 gelu16(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 limit = _mm512_set1_ps(10.0f);
  const __m512 z = _mm512_min_ps(
      _mm512_abs_ps(_mm512_mul_ps(x, _mm512_set1_ps(0.70710678118654752f))), limit);
  const __mmask16 inside = _mm512_cmp_ps_mask(_mm512_abs_ps(x), _mm512_set1_ps(14.0f), _CMP_LT_OQ);
  const __m512 d = _mm512_fmadd_ps(_mm512_set1_ps(0.3275911f), z, one);
  __m512 t = _mm512_rcp14_ps(d);
  t = _mm512_mul_ps(t, _mm512_fnmadd_ps(d, t, _mm512_set1_ps(2.0f)));  // one Newton step
  // the polynomial's coefficients halved, so that q = (1 - erf(z)) / 2
  __m512 poly = _mm512_fmadd_ps(_mm512_set1_ps(0.5307027145f), t, _mm512_set1_ps(-0.7265760135f));
  poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(0.7107068705f));
  poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(-0.142248368f));
  poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(0.127414796f));
  const __m512 e = exp_nonpositive(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), z), z));
  const __m512 q = _mm512_maskz_mul_ps(inside, _mm512_mul_ps(t, poly), e);
  const __mmask16 negative = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
  const __m512 phi = _mm512_mask_blend_ps(negative, _mm512_sub_ps(one, q), q);
  return _mm512_mul_ps(x, phi);
}

void gelu_range(const float* in, float* out, int64_t begin, int64_t end) {
  int64_t i = begin;
  for (; i + 16 <= end; i += 16) _mm512_storeu_ps(out + i, gelu16(_mm512_loadu_ps(in + i)));
  if (i < end) {
    const __mmask16 mask = static_cast<__mmask16>((1u << (end - i)) - 1);
    _mm512_mask_storeu_ps(out + i, mask, gelu16(_mm512_maskz_loadu_ps(mask, in + i)));
  }
}

inline float sum16(const float* x, int64_t d, __m512 shift, bool squares) {
  __m512 acc = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= d; i += 16) {
    const __m512 c = _mm512_sub_ps(_mm512_loadu_ps(x + i), shift);
    acc = squares ? _mm512_fmadd_ps(c, c, acc) : _mm512_add_ps(acc, c);
  }
  if (i < d) {
    const __mmask16 mask = static_cast<__mmask16>((1u << (d - i)) - 1);
    const __m512 c = _mm512_maskz_sub_ps(mask, _mm512_maskz_loadu_ps(mask, x + i), shift);
    acc = squares ? _mm512_fmadd_ps(c, c, acc) : _mm512_add_ps(acc, c);
  }
  return _mm512_reduce_add_ps(acc);
}

// (x - mean) / sqrt(var + eps) * weight + bias per row, the variance biased, in two passes.
void layer_norm_rows(const float* in, float* out, int64_t begin, int64_t end, int64_t d,
                     const float* weight, const float* bias, float eps) {
  for (int64_t r = begin; r < end; ++r) {
    const float* x = in + r * d;
    float* y = out + r * d;
    const float mean = sum16(x, d, _mm512_setzero_ps(), false) / static_cast<float>(d);
    const __m512 m = _mm512_set1_ps(mean);
    const float var = sum16(x, d, m, true) / static_cast<float>(d);
    const __m512 scale = _mm512_set1_ps(1.0f / std::sqrt(var + eps));
    int64_t i = 0;
    for (; i + 16 <= d; i += 16) {
      const __m512 c = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + i), m), scale);
      _mm512_storeu_ps(y + i, _mm512_fmadd_ps(c, _mm512_loadu_ps(weight + i), _mm512_loadu_ps(bias + i)));
    }
    if (i < d) {
      const __mmask16 mask = static_cast<__mmask16>((1u << (d - i)) - 1);
      const __m512 c = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, x + i), m), scale);
      _mm512_mask_storeu_ps(y + i, mask, _mm512_fmadd_ps(c, _mm512_maskz_loadu_ps(mask, weight + i),
                                                         _mm512_maskz_loadu_ps(mask, bias + i)));
    }
  }
}

#endif  // TTRL_AVX512

bool available() {
#ifdef TTRL_AVX512
  return true;
#else
  return false;
#endif
}

void require_available() { TORCH_CHECK(available(), "ttrl's CPU ops were built without AVX-512"); }

// weight [N, K] (N a multiple of 64) -> [N / 64, K, 64]: panel p, row k holds W[64p : 64p + 64, k].
torch::Tensor pack_weight(const torch::Tensor& weight) {
  check_float(weight, "weight");
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) % kPanel == 0,
              "weight must be [N, K] with N a multiple of 64");
  const int64_t n = weight.size(0), k = weight.size(1);
  return weight.contiguous().view({n / kPanel, kPanel, k}).transpose(1, 2).contiguous();
}

// x [..., K] @ W^T + bias with W packed by pack_weight: [..., N].
torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& packed, const torch::Tensor& bias) {
  require_available();
  check_float(x, "x");
  check_float(packed, "packed");
  check_float(bias, "bias");
  const int64_t k_dim = x.size(-1), panels = packed.size(0), n = panels * kPanel;
  TORCH_CHECK(packed.dim() == 3 && packed.size(1) == k_dim && packed.size(2) == kPanel &&
                  packed.is_contiguous(),
              "packed must be pack_weight's [N / 64, K, 64] for K = x.size(-1)");
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == n && bias.is_contiguous(), "bias must be [N]");
  const torch::Tensor a = x.reshape({-1, k_dim}).contiguous();
  const int64_t rows = a.size(0);
  std::vector<int64_t> sizes = x.sizes().vec();
  sizes.back() = n;
  torch::Tensor out = torch::empty({rows, n}, x.options());
#ifdef TTRL_AVX512
  const float* a_data = a.data_ptr<float>();
  const float* w = packed.data_ptr<float>();
  const float* b = bias.data_ptr<float>();
  float* o = out.data_ptr<float>();
  const int64_t tasks = (rows + kRowsPerTask - 1) / kRowsPerTask;
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t first = t * kRowsPerTask, count = std::min(kRowsPerTask, rows - first);
      linear_rows(a_data + first * k_dim, count, k_dim, w, panels, b, o + first * n);
    }
  });
#endif
  return out.view(sizes);
}

torch::Tensor gelu(const torch::Tensor& x) {
  require_available();
  check_float(x, "x");
  const torch::Tensor in = x.contiguous();
  torch::Tensor out = torch::empty_like(in);
#ifdef TTRL_AVX512
  const float* src = in.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  at::parallel_for(0, in.numel(), kGrain, [&](int64_t begin, int64_t end) {
    gelu_range(src, dst, begin, end);
  });
#endif
  return out;
}

torch::Tensor layer_norm(const torch::Tensor& x, const torch::Tensor& weight,
                         const torch::Tensor& bias, double eps) {
  require_available();
  check_float(x, "x");
  check_float(weight, "weight");
  check_float(bias, "bias");
  const int64_t d = x.size(-1);
  TORCH_CHECK(weight.numel() == d && bias.numel() == d && weight.is_contiguous() &&
                  bias.is_contiguous(),
              "weight and bias must be [x.size(-1)]");
  const torch::Tensor in = x.contiguous();
  torch::Tensor out = torch::empty_like(in);
#ifdef TTRL_AVX512
  const float* src = in.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  const float* w = weight.data_ptr<float>();
  const float* b = bias.data_ptr<float>();
  const int64_t rows = d ? in.numel() / d : 0;
  at::parallel_for(0, rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(d, 1)),
                   [&](int64_t begin, int64_t end) {
                     layer_norm_rows(src, dst, begin, end, d, w, b, static_cast<float>(eps));
                   });
#endif
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("available", &available, "whether the ops were built (AVX-512)");
  m.def("pack_weight", &pack_weight, "a linear layer's weight in 64-column panels");
  m.def("linear", &linear, "x @ W^T + bias with a packed weight");
  m.def("gelu", &gelu, "exact (erf) GELU");
  m.def("layer_norm", &layer_norm, "LayerNorm over the last dim");
}
