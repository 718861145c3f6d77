// The planner cache's attention on the CPU, one call per layer and chunk (see cached_attention.py).
//
// The cache's keys/values lie in segments per row: its environment's shared prefix, the runs of
// its history that a window rebuild kept once per distinct beam history (one per level, see
// History), its parent's plan (after an expand) and its own slots. Torch would need a stored-slot
// copy, a grouped matmul per segment, a concatenation, a softmax and a matmul per segment again,
// each a small op with its own dispatch; here each (row, head, query) reads its segments in place.
// The arithmetic is the cache's own attention: softmax(q k^T / sqrt(d)) v over the visible slots.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define TTRL_AVX2 1
#endif

namespace {

// A run of key/value slots one row reads: slot l of head h is at key + h * head_stride + l * slot_stride.
template <typename T>
struct Segment {
  const T* key;
  const T* value;
  int64_t head_stride, slot_stride, length;
};

// A window rebuild's history, kept once per distinct run: level c holds groups[c] runs of
// lengths[c] slots each, laid out [group, head, slot, head_dim] from element offsets[c] of the
// pools; row r of the history reads run rows[r * levels + c] at each level c.
template <typename T>
struct History {
  const T* key = nullptr;
  const T* value = nullptr;
  std::vector<int64_t> offsets, lengths;
  const int64_t* rows = nullptr;
  int64_t levels = 0;
};

// One (row, query, head): its query [d] (unscaled) and where its attended values [d] go.
template <typename T>
struct Query {
  const T* q;
  T* out;
};

template <typename T>
void attend_scalar(const Query<T>& job, const Segment<T>* segments, int n_segments, int64_t d,
                   T scale, int64_t head, std::vector<T>& scores) {
  int64_t total = 0;
  for (int g = 0; g < n_segments; ++g) total += segments[g].length;
  scores.resize(std::max<int64_t>(total, 1));
  int64_t at = 0;
  for (int g = 0; g < n_segments; ++g) {
    const Segment<T>& s = segments[g];
    for (int64_t l = 0; l < s.length; ++l) {
      const T* k = s.key + head * s.head_stride + l * s.slot_stride;
      T dot = 0;
      for (int64_t j = 0; j < d; ++j) dot += job.q[j] * k[j];
      scores[at++] = dot * scale;
    }
  }
  T best = -INFINITY;
  for (int64_t i = 0; i < total; ++i) best = std::max(best, scores[i]);
  T sum = 0;
  for (int64_t i = 0; i < total; ++i) sum += (scores[i] = std::exp(scores[i] - best));
  for (int64_t j = 0; j < d; ++j) job.out[j] = 0;
  at = 0;
  for (int g = 0; g < n_segments; ++g) {
    const Segment<T>& s = segments[g];
    for (int64_t l = 0; l < s.length; ++l) {
      const T* v = s.value + head * s.head_stride + l * s.slot_stride;
      const T p = scores[at++] / sum;
      for (int64_t j = 0; j < d; ++j) job.out[j] += p * v[j];
    }
  }
}

#ifdef TTRL_AVX2
// exp on [-87, 0] (scores minus their maximum): Cody-Waite reduction and a degree-6 polynomial.
inline __m256 exp_avx2(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i power = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(power));
}

inline float sum_avx2(__m256 a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_hadd_ps(s, s);
  return _mm_cvtss_f32(_mm_hadd_ps(s, s));
}

inline float max_avx2(__m256 a) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  return std::max(_mm_cvtss_f32(m), _mm_cvtss_f32(_mm_shuffle_ps(m, m, 1)));
}

// The same for float heads of CHUNKS * 8 dims: eight keys' dot products at a time.
template <int CHUNKS>
void attend_avx2(const Query<float>& job, const Segment<float>* segments, int n_segments,
                 float scale, int64_t head, std::vector<float>& scores) {
  __m256 query[CHUNKS];
  for (int c = 0; c < CHUNKS; ++c)
    query[c] = _mm256_mul_ps(_mm256_loadu_ps(job.q + 8 * c), _mm256_set1_ps(scale));
  int64_t total = 0;
  for (int g = 0; g < n_segments; ++g) total += segments[g].length;
  scores.resize(total + 8);
  float* score = scores.data();
  auto dot = [&](const float* k) {
    __m256 acc = _mm256_mul_ps(query[0], _mm256_loadu_ps(k));
    for (int c = 1; c < CHUNKS; ++c) acc = _mm256_fmadd_ps(query[c], _mm256_loadu_ps(k + 8 * c), acc);
    return acc;
  };
  int64_t at = 0;
  for (int g = 0; g < n_segments; ++g) {
    const Segment<float>& s = segments[g];
    const float* keys = s.key + head * s.head_stride;
    int64_t l = 0;
    // whole blocks of eight keys; a last partial block repeats its last key, and the lanes past
    // the segment are overwritten by the next one (or lie in the slack past the total)
    for (; l < s.length; l += 8) {
      __m256 a[8];
      for (int i = 0; i < 8; ++i)
        a[i] = dot(keys + std::min<int64_t>(l + i, s.length - 1) * s.slot_stride);
      // transpose-and-add: lane i of the result is the sum of a[i]
      const __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
      const __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
      _mm256_storeu_ps(score + at + l, _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20),
                                                     _mm256_permute2f128_ps(u0, u1, 0x31)));
    }
    at += s.length;
  }
  __m256 bests = _mm256_set1_ps(-INFINITY);
  int64_t i = 0;
  for (; i + 8 <= total; i += 8) bests = _mm256_max_ps(bests, _mm256_loadu_ps(score + i));
  float best = max_avx2(bests);
  for (; i < total; ++i) best = std::max(best, score[i]);
  const __m256 shift = _mm256_set1_ps(best);
  __m256 sums = _mm256_setzero_ps();
  for (i = 0; i + 8 <= total; i += 8) {
    const __m256 e = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(score + i), shift));
    _mm256_storeu_ps(score + i, e);
    sums = _mm256_add_ps(sums, e);
  }
  float sum = sum_avx2(sums);
  for (; i < total; ++i) sum += (score[i] = std::exp(score[i] - best));
  const float inverse = 1.0f / sum;
  // two sets of accumulators: consecutive keys do not wait on each other's FMA latency
  __m256 acc[2][CHUNKS];
  for (int c = 0; c < CHUNKS; ++c) acc[0][c] = acc[1][c] = _mm256_setzero_ps();
  at = 0;
  for (int g = 0; g < n_segments; ++g) {
    const Segment<float>& s = segments[g];
    const float* values = s.value + head * s.head_stride;
    int64_t l = 0;
    for (; l + 2 <= s.length; l += 2) {
      const __m256 p0 = _mm256_set1_ps(score[at + l]), p1 = _mm256_set1_ps(score[at + l + 1]);
      const float* v0 = values + l * s.slot_stride;
      const float* v1 = v0 + s.slot_stride;
      for (int c = 0; c < CHUNKS; ++c) {
        acc[0][c] = _mm256_fmadd_ps(p0, _mm256_loadu_ps(v0 + 8 * c), acc[0][c]);
        acc[1][c] = _mm256_fmadd_ps(p1, _mm256_loadu_ps(v1 + 8 * c), acc[1][c]);
      }
    }
    if (l < s.length) {
      const __m256 p = _mm256_set1_ps(score[at + l]);
      const float* v = values + l * s.slot_stride;
      for (int c = 0; c < CHUNKS; ++c) acc[0][c] = _mm256_fmadd_ps(p, _mm256_loadu_ps(v + 8 * c), acc[0][c]);
    }
    at += s.length;
  }
  const __m256 scale_out = _mm256_set1_ps(inverse);
  for (int c = 0; c < CHUNKS; ++c)
    _mm256_storeu_ps(job.out + 8 * c, _mm256_mul_ps(_mm256_add_ps(acc[0][c], acc[1][c]), scale_out));
}
#endif

template <typename T>
void attend_one(const Query<T>& job, const Segment<T>* segments, int n, int64_t d, T scale,
                int64_t head, std::vector<T>& scores) {
#ifdef TTRL_AVX2
  if constexpr (std::is_same_v<T, float>) {
    switch (d) {
      case 8: return attend_avx2<1>(job, segments, n, scale, head, scores);
      case 16: return attend_avx2<2>(job, segments, n, scale, head, scores);
      case 32: return attend_avx2<4>(job, segments, n, scale, head, scores);
      case 64: return attend_avx2<8>(job, segments, n, scale, head, scores);
      default: break;
    }
  }
#endif
  attend_scalar<T>(job, segments, n, d, scale, head, scores);
}

void check_slots(const torch::Tensor& t, const char* name, const torch::Tensor& query) {
  TORCH_CHECK(t.dim() == 4 && t.size(1) == query.size(1) && t.size(3) == query.size(3),
              name, " must be [rows, heads, slots, head_dim] like the query");
  TORCH_CHECK(t.stride(3) == 1 && t.scalar_type() == query.scalar_type() && t.device().is_cpu(),
              name, " must be a CPU tensor of the query's dtype with contiguous head dims");
}

// The new keys/values go into the rows' own slots: stored token i at slot first + i.
template <typename T>
void store_slots(const torch::Tensor& src, const torch::Tensor& dst,
                 const std::vector<int64_t>& stored, int64_t first) {
  const T* s = src.data_ptr<T>();
  T* t = dst.data_ptr<T>();
  const int64_t d = src.size(3);
  for (int64_t r = 0; r < src.size(0); ++r)
    for (int64_t h = 0; h < src.size(1); ++h)
      for (size_t i = 0; i < stored.size(); ++i)
        std::memcpy(t + r * dst.stride(0) + h * dst.stride(1) + (first + i) * dst.stride(2),
                    s + r * src.stride(0) + h * src.stride(1) + stored[i] * src.stride(2),
                    d * sizeof(T));
}

template <typename T>
torch::Tensor attend_typed(const torch::Tensor& query, const torch::Tensor& key,
                           const torch::Tensor& value, const std::vector<int64_t>& stored,
                           int64_t first, const torch::Tensor& own_key,
                           const torch::Tensor& own_value,
                           const c10::optional<torch::Tensor>& shared_key,
                           const c10::optional<torch::Tensor>& shared_value, int64_t shared_slots,
                           const c10::optional<torch::Tensor>& parent_key,
                           const c10::optional<torch::Tensor>& parent_value, int64_t parent_slots,
                           int64_t n_env, int64_t children, const std::vector<int64_t>& own_visible,
                           double scale, const History<T>& history) {
  const int64_t rows = query.size(0), heads = query.size(1), n_query = query.size(2);
  const int64_t d = query.size(3), per_env = rows / n_env, parents_per_env = per_env / children;
  store_slots<T>(key, own_key, stored, first);
  store_slots<T>(value, own_value, stored, first);
  const bool shared = shared_key.has_value() && shared_slots > 0;
  const bool parent = parent_key.has_value() && parent_slots > 0;
  auto out = torch::empty({rows, n_query, heads * d}, query.options());
  T* o = out.data_ptr<T>();
  const T* q = query.data_ptr<T>();
  auto segment = [](const torch::Tensor& k, const torch::Tensor& v, int64_t row, int64_t length) {
    return Segment<T>{k.data_ptr<T>() + row * k.stride(0), v.data_ptr<T>() + row * v.stride(0),
                      k.stride(1), k.stride(2), length};
  };
  // Rows are [env, child, parent]; the children of a parent run one after another, so its plan
  // is read from memory once for all of them. Torch's threads share the rows.
  at::parallel_for(0, rows, 8, [&](int64_t begin, int64_t end) {
    std::vector<T> scores;
    std::vector<Segment<T>> segments(3 + history.levels);
    for (int64_t job = begin; job < end; ++job) {
      const int64_t env = job / per_env, parent_in_env = job % per_env / children;
      const int64_t r = env * per_env + job % children * parents_per_env + parent_in_env;
      const int64_t beam = env * parents_per_env + parent_in_env;  // a child reads its parent's
      int n = 0;
      if (shared) segments[n++] = segment(*shared_key, *shared_value, env, shared_slots);
      for (int64_t c = 0; c < history.levels; ++c) {
        const int64_t length = history.lengths[c];
        const int64_t at = history.offsets[c] + history.rows[beam * history.levels + c] * heads *
                                                    length * d;
        segments[n++] = Segment<T>{history.key + at, history.value + at, length * d, d, length};
      }
      if (parent)
        segments[n++] = segment(*parent_key, *parent_value, env * parents_per_env + parent_in_env,
                                parent_slots);
      for (int64_t i = 0; i < n_query; ++i) {
        segments[n] = segment(own_key, own_value, r, own_visible[i]);
        for (int64_t h = 0; h < heads; ++h) {
          const Query<T> one{q + r * query.stride(0) + h * query.stride(1) + i * query.stride(2),
                             o + (r * n_query + i) * heads * d + h * d};
          attend_one<T>(one, segments.data(), n + 1, d, static_cast<T>(scale), h, scores);
        }
      }
    }
  });
  // [rows, heads, queries, head_dim], the layout the model's attention returns: a view
  return out.view({rows, n_query, heads, d}).transpose(1, 2);
}

}  // namespace

// Store a chunk's new keys/values in the rows' own slots and attend its queries; see attend_typed.
torch::Tensor attend(torch::Tensor query, torch::Tensor key, torch::Tensor value,
                     std::vector<int64_t> stored, int64_t first, torch::Tensor own_key,
                     torch::Tensor own_value, c10::optional<torch::Tensor> shared_key,
                     c10::optional<torch::Tensor> shared_value, int64_t shared_slots,
                     c10::optional<torch::Tensor> parent_key,
                     c10::optional<torch::Tensor> parent_value, int64_t parent_slots,
                     int64_t n_env, int64_t children, std::vector<int64_t> own_visible,
                     double scale, c10::optional<torch::Tensor> pool_key,
                     c10::optional<torch::Tensor> pool_value, std::vector<int64_t> level_offsets,
                     std::vector<int64_t> level_lengths, std::vector<int64_t> level_groups,
                     c10::optional<torch::Tensor> row_groups) {
  TORCH_CHECK(query.dim() == 4 && query.stride(3) == 1 && query.device().is_cpu(),
              "query must be a CPU tensor [rows, heads, queries, head_dim]");
  TORCH_CHECK(static_cast<int64_t>(own_visible.size()) == query.size(2),
              "own_visible needs one slot count per query");
  TORCH_CHECK(n_env > 0 && children > 0 && query.size(0) % (n_env * children) == 0,
              "rows must be whole environments of whole parents");
  check_slots(key, "key", query);
  check_slots(value, "value", query);
  check_slots(own_key, "own_key", query);
  check_slots(own_value, "own_value", query);
  const int64_t rows = query.size(0), per_env = rows / n_env;
  TORCH_CHECK(key.size(0) == rows && value.size(0) == rows && key.sizes() == value.sizes(),
              "key and value must have the query's rows");
  TORCH_CHECK(own_key.size(0) >= rows && own_key.sizes() == own_value.sizes(),
              "own_key and own_value must be alike, with a slot row for every query row");
  // a segment's keys and values come together, with a row for every environment (or parent)
  const auto check_segment = [&](const c10::optional<torch::Tensor>& k,
                                 const c10::optional<torch::Tensor>& v, int64_t needed,
                                 int64_t length, const char* name) {
    TORCH_CHECK(k.has_value() == v.has_value(), name, " keys and values come together");
    TORCH_CHECK(length >= 0, name, " slot count must not be negative");
    if (!k.has_value()) return;
    check_slots(*k, name, query);
    check_slots(*v, name, query);
    TORCH_CHECK(k->sizes() == v->sizes() && k->size(0) >= needed, name,
                " keys and values must be alike, with a row for each of its ", needed, " users");
    TORCH_CHECK(length <= k->size(2), name, " slot count exceeds its buffer");
  };
  check_segment(shared_key, shared_value, n_env, shared_slots, "the shared segment's");
  check_segment(parent_key, parent_value, n_env * (per_env / children), parent_slots,
                "the parent segment's");
  const int64_t slots = own_key.size(2);
  TORCH_CHECK(first + static_cast<int64_t>(stored.size()) <= slots, "own slots overflow");
  for (int64_t v : own_visible) TORCH_CHECK(v >= 0 && v <= slots, "own_visible out of range");
  for (int64_t s : stored) TORCH_CHECK(s >= 0 && s < key.size(2), "stored offset out of range");
  const int64_t levels = static_cast<int64_t>(level_offsets.size());
  TORCH_CHECK(level_lengths.size() == level_offsets.size() &&
                  level_groups.size() == level_offsets.size(),
              "a history level needs an offset, a length and a group count");
  if (levels > 0) {
    TORCH_CHECK(pool_key.has_value() && pool_value.has_value() && row_groups.has_value(),
                "history levels need both pools and the rows' groups");
    for (const auto* pool : {&*pool_key, &*pool_value})
      TORCH_CHECK(pool->dim() == 1 && pool->is_contiguous() && pool->device().is_cpu() &&
                      pool->scalar_type() == query.scalar_type() &&
                      pool->numel() == pool_key->numel(),
                  "the history pools must be alike, flat, contiguous CPU tensors of the query's "
                  "dtype");
    const int64_t run = query.size(1) * query.size(3);  // one slot of every head
    for (int64_t c = 0; c < levels; ++c)
      TORCH_CHECK(level_offsets[c] >= 0 && level_lengths[c] > 0 && level_groups[c] > 0 &&
                      level_offsets[c] + level_groups[c] * level_lengths[c] * run <=
                          pool_key->numel(),
                  "history level ", c, " lies outside its pool");
    const torch::Tensor& g = *row_groups;
    TORCH_CHECK(g.dim() == 2 && g.size(1) == levels && g.is_contiguous() &&
                    g.scalar_type() == torch::kLong && g.device().is_cpu(),
                "row_groups must be a contiguous CPU LongTensor [rows, levels]");
    TORCH_CHECK(g.size(0) >= n_env * (per_env / children),
                "row_groups needs a row for every beam (a parent's row after an expand)");
    const int64_t* groups = g.data_ptr<int64_t>();
    for (int64_t i = 0; i < g.size(0); ++i)
      for (int64_t c = 0; c < levels; ++c)
        TORCH_CHECK(groups[i * levels + c] >= 0 && groups[i * levels + c] < level_groups[c],
                    "row_groups names a run its level does not hold");
  }
  const auto run_typed = [&](auto zero) {
    using T = decltype(zero);
    History<T> history;
    if (levels > 0) {
      history = History<T>{pool_key->data_ptr<T>(), pool_value->data_ptr<T>(), level_offsets,
                           level_lengths, row_groups->data_ptr<int64_t>(), levels};
    }
    return attend_typed<T>(query, key, value, stored, first, own_key, own_value, shared_key,
                           shared_value, shared_slots, parent_key, parent_value, parent_slots,
                           n_env, children, own_visible, scale, history);
  };
  if (query.scalar_type() == torch::kFloat) return run_typed(0.0f);
  TORCH_CHECK(query.scalar_type() == torch::kDouble, "float32 or float64 only");
  return run_typed(0.0);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("attend", &attend, "the planner cache's attention over shared, history, parent and own slots",
        py::arg("query"), py::arg("key"), py::arg("value"), py::arg("stored"), py::arg("first"),
        py::arg("own_key"), py::arg("own_value"), py::arg("shared_key"), py::arg("shared_value"),
        py::arg("shared_slots"), py::arg("parent_key"), py::arg("parent_value"),
        py::arg("parent_slots"), py::arg("n_env"), py::arg("children"), py::arg("own_visible"),
        py::arg("scale"), py::arg("pool_key") = py::none(), py::arg("pool_value") = py::none(),
        py::arg("level_offsets") = std::vector<int64_t>{},
        py::arg("level_lengths") = std::vector<int64_t>{},
        py::arg("level_groups") = std::vector<int64_t>{}, py::arg("row_groups") = py::none());
}
