// The flow of Eq. 9 for an MLP estimator on the CPU, fused: K steps of
//     x <- x - eta * grad_x phi(NN(x)) + nu * xi,    phi'(out) = pa + pb * sigmoid(ps * out),
// with NN a LeakyReLU MLP (fdrl.nets.MLP) and grad_x taken by hand as in
// fdrl.nets.mlp.mlp_input_gradient. Particles do not interact and the weights are fixed during a
// flow, so each tile of TILE rows runs all K steps while its activations stay in L1 and the
// weights in L2 (larger weights: panels of tiles, see flow_rows); each layer is one register-blocked product with the bias + LeakyReLU (forward)
// or the LeakyReLU derivative (backward) applied to the accumulators before they are stored.
// Written by hand because no library fuses a whole MLP forward + input-gradient pass: MKL and
// oneDNN run one product per call, and between calls every activation goes through memory
// (benchmarks/swissroll_iteration.py measures the difference). Loaded by fdrl.native (ctypes).
#include <atomic>
#include <cmath>
#include <cstddef>
#include <new>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#if defined(__AVX512F__)
#define VB 64      // bytes per vector register
#define NVMAX 4    // vectors per row in one block: 6 x 4 accumulators of 32 registers
#define TILE 6
#elif defined(__AVX__)
#define VB 32
#define NVMAX 4    // 3 x 4 accumulators of 16 registers
#define TILE 3
#else
#define VB 16
#define NVMAX 2
#define TILE 4
#endif
#define VW (VB / 4)  // floats per vector
#ifndef L2_WEIGHT_BYTES
#define L2_WEIGHT_BYTES (256 * 1024)  // weights up to this size stay in L2: one tile at a time
#endif
#ifndef PANEL_TILES
#define PANEL_TILES 16  // tiles per panel for larger weights
#endif

typedef float vf __attribute__((vector_size(VB)));
typedef float vfu __attribute__((vector_size(VB), aligned(4), may_alias));

static inline vf vload(const float* p) { return *(const vfu*)p; }
static inline void vstore(float* p, vf v) { *(vfu*)p = v; }
static inline vf vset(float a) { return (vf){} + a; }
static inline float hsum(vf v) {
  float s = 0.f;
  for (int i = 0; i < VW; ++i) s += v[i];
  return s;
}

// One block: out[R x NV*VW] = A[R x kdim] @ B[kdim x NV*VW] (row strides lda, ldb, ld), then
// forward (bias != null): Z = acc + bias, out = LeakyReLU(Z); backward (Z != null):
// out = acc * LeakyReLU'(Z); neither: out = acc.
template <int R, int NV>
static inline void block(int kdim, const float* __restrict A, int lda, const float* __restrict B, int ldb,
                         const float* __restrict bias, float* __restrict Z, float* __restrict out, int ld,
                         float slope) {
  vf acc[R][NV];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[r][v] = vset(0.f);
  for (int k = 0; k < kdim; ++k) {
    vf b[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) b[v] = vload(B + (size_t)k * ldb + v * VW);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      vf a = vset(A[(size_t)r * lda + k]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[r][v] += a * b[v];
    }
  }
  const vf zero = vset(0.f), sl = vset(slope);
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      const size_t o = (size_t)r * ld + v * VW;
      if (bias) {
        vf z = acc[r][v] + vload(bias + v * VW);
        vstore(Z + o, z);
        vstore(out + o, z > zero ? z : z * sl);
      } else if (Z) {
        vstore(out + o, vload(Z + o) > zero ? acc[r][v] : acc[r][v] * sl);
      } else {
        vstore(out + o, acc[r][v]);
      }
    }
}

template <int NV>
static void block_rows(int rows, int kdim, const float* A, int lda, const float* B, int ldb, const float* bias,
                       float* Z, float* out, int ld, float slope) {
  switch (rows) {
    case 1: return block<1, NV>(kdim, A, lda, B, ldb, bias, Z, out, ld, slope);
    case 2: return block<2, NV>(kdim, A, lda, B, ldb, bias, Z, out, ld, slope);
#if TILE > 2
    case 3: return block<3, NV>(kdim, A, lda, B, ldb, bias, Z, out, ld, slope);
#endif
#if TILE > 3
    case 4: return block<4, NV>(kdim, A, lda, B, ldb, bias, Z, out, ld, slope);
#endif
#if TILE > 4
    case 5: return block<5, NV>(kdim, A, lda, B, ldb, bias, Z, out, ld, slope);
    case 6: return block<6, NV>(kdim, A, lda, B, ldb, bias, Z, out, ld, slope);
#endif
  }
}

// One layer for a panel of `rows` rows: out[rows x width] from A[rows x kdim] and B[kdim x width]
// (width a multiple of VW; out, Z with row stride width). Column blocks outermost, so each block
// of B is read from cache by every tile of the panel before the next one is loaded.
static void layer(int rows, int width, int kdim, const float* A, int lda, const float* B, const float* bias,
                  float* Z, float* out, float slope) {
  for (int c = 0; c < width;) {
    const bool wide = c + NVMAX * VW <= width;
    for (int r = 0; r < rows; r += TILE) {
      const int R = rows - r < TILE ? rows - r : TILE;
      const size_t o = (size_t)r * width + c;
      (wide ? block_rows<NVMAX> : block_rows<1>)(R, kdim, A + (size_t)r * lda, lda, B + c, width,
                                                 bias ? bias + c : nullptr, Z ? Z + o : nullptr, out + o, width,
                                                 slope);
    }
    c += wide ? NVMAX * VW : VW;
  }
}

struct Net {
  int layers, width;                   // hidden layers, padded width
  const float* const* wt;              // [layers]: transposed weights, [in_l x width]
  const float* const* w;               // [layers]: weights [width x in_l], w[0] with in_0 = d padded
                                       // to whole vectors (used when d >= VW)
  const float* const* bias;            // [layers]: [width]
  const float* wout;                   // [width]
  float bout, slope, pa, pb, ps;
};

// Rows [first, last) of x through `steps` steps, a panel of rows at a time: TILE rows when the
// weights fit in L2 (each tile runs every step with its activations in L1), PANEL_TILES tiles when
// they do not, so that each block of weights loaded into cache serves the whole panel.
static void flow_rows(float* x, long long n, long long first, long long last, int d, int steps, const float* noise,
                      float eta, float nu, const Net& net) {
  const int H = net.width, L = net.layers, dp = (d + VW - 1) / VW * VW;
  const bool gemm_input = d >= VW;  // the input gradient as a product (else one dot product per input)
  const size_t weight_bytes = sizeof(float) * ((size_t)d * H + (size_t)(L - 1) * H * H);
  const int panel = weight_bytes <= L2_WEIGHT_BYTES ? TILE : TILE * PANEL_TILES;
  std::vector<float> buffers((size_t)(L + 2) * panel * H + (gemm_input ? (size_t)panel * dp : 0));
  float* Z = buffers.data();                         // pre-activations, one [panel x H] per layer
  float* ping = Z + (size_t)L * panel * H;
  float* pong = ping + (size_t)panel * H;
  float* gx = pong + (size_t)panel * H;              // [panel x dp] input gradient (gemm_input)
  for (long long row0 = first; row0 < last; row0 += panel) {
    const int P = last - row0 < panel ? (int)(last - row0) : panel;
    float* xr = x + (size_t)row0 * d;
    for (int k = 0; k < steps; ++k) {
      float *h = ping, *other = pong;
      layer(P, H, d, xr, d, net.wt[0], net.bias[0], Z, h, net.slope);
      for (int l = 1; l < L; ++l) {
        layer(P, H, H, h, H, net.wt[l], net.bias[l], Z + (size_t)l * panel * H, other, net.slope);
        std::swap(h, other);
      }
      // g_L = phi'(NN) w * LeakyReLU'(z_L)
      float* g = other;
      const float* zl = Z + (size_t)(L - 1) * panel * H;
      for (int r = 0; r < P; ++r) {
        vf s = vset(0.f);
        for (int c = 0; c < H; c += VW) s += vload(h + (size_t)r * H + c) * vload(net.wout + c);
        const float out = net.bout + hsum(s);
        const float dphi = net.pa + (net.pb != 0.f ? net.pb / (1.f + std::exp(-net.ps * out)) : 0.f);
        for (int c = 0; c < H; c += VW) {
          const vf gg = vset(dphi) * vload(net.wout + c);
          vstore(g + (size_t)r * H + c, vload(zl + (size_t)r * H + c) > vset(0.f) ? gg : gg * vset(net.slope));
        }
      }
      // g_{l-1} = (g_l W_l) * LeakyReLU'(z_{l-1})
      other = h;
      for (int l = L - 1; l >= 1; --l) {
        layer(P, H, H, g, H, net.w[l], nullptr, Z + (size_t)(l - 1) * panel * H, other, net.slope);
        std::swap(g, other);
      }
      // grad_x = g_1 W_1, then Eq. 9's update (in the plain path's order: - eta grad, then + nu xi)
      if (gemm_input) layer(P, dp, H, g, H, net.w[0], nullptr, nullptr, gx, net.slope);
      for (int r = 0; r < P; ++r)
        for (int j = 0; j < d; ++j) {
          float grad;
          if (gemm_input) {
            grad = gx[(size_t)r * dp + j];
          } else {
            vf s = vset(0.f);
            const float* col = net.wt[0] + (size_t)j * H;
            for (int c = 0; c < H; c += VW) s += vload(g + (size_t)r * H + c) * vload(col + c);
            grad = hsum(s);
          }
          float v = xr[(size_t)r * d + j] - eta * grad;
          if (noise) v = v + nu * noise[((size_t)k * n + row0 + r) * d + j];
          xr[(size_t)r * d + j] = v;
        }
    }
  }
}

extern "C" {

// bytes per vector register this build uses (64: AVX-512, 32: AVX/AVX2, 16: generic)
int fdrl_vector_bytes() { return VB; }

// x [n x d] (row-major) is moved `steps` steps in place; noise is [steps x n x d] or null;
// rows are split over `threads` threads (each row's arithmetic does not depend on the split).
// Returns 0, or FDRL_OUT_OF_MEMORY / FDRL_FAILED: no C++ exception crosses into the caller
// (ctypes), where it would abort the process. A thread that cannot be created (std::system_error)
// costs speed only: its rows run on the calling thread.
enum { FDRL_OK = 0, FDRL_OUT_OF_MEMORY = 1, FDRL_FAILED = 2 };

int fdrl_mlp_flow(float* x, int n, int d, int steps, const float* noise, float eta, float nu, int layers,
                  int width, const float* const* wt, const float* const* w, const float* const* bias,
                  const float* wout, float bout, float slope, float pa, float pb, float ps, int threads) {
  std::atomic<int> status{FDRL_OK};
  auto run = [&](long long first, long long last) {
    try {
      const Net net{layers, width, wt, w, bias, wout, bout, slope, pa, pb, ps};
      flow_rows(x, n, first, last, d, steps, noise, eta, nu, net);
    } catch (const std::bad_alloc&) {
      status = FDRL_OUT_OF_MEMORY;
    } catch (...) {
      status = FDRL_FAILED;
    }
  };
  const long long tiles = ((long long)n + TILE - 1) / TILE;
  if (threads > tiles) threads = (int)tiles;
  if (threads <= 1) {
    run(0, n);
    return status;
  }
  std::vector<std::thread> pool;
  try {
    pool.reserve(threads);
  } catch (...) {
    run(0, n);
    return status;
  }
  for (int t = 0; t < threads; ++t) {
    const long long first = tiles * t / threads * TILE;
    long long last = tiles * (t + 1) / threads * TILE;
    if (last > n) last = n;
    try {
      pool.emplace_back(run, first, last);
    } catch (...) {  // no thread to be had (std::system_error): these rows here
      run(first, last);
    }
  }
  for (auto& t : pool) t.join();
  return status;
}
}
