// Small linear-algebra helpers shared by the kernels (internal): Eigen maps over row-major
// float buffers, the product helper that never makes Eigen allocate, and the (ith, nth) work
// split used inside OpenMP regions.
#pragma once

#include <Eigen/Core>
#include <algorithm>

namespace titans {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

namespace linalg {

using Index = Eigen::Index;
using MatMap = Eigen::Map<RowMatrix, Eigen::Unaligned, Eigen::OuterStride<>>;
using ConstMatMap = Eigen::Map<const RowMatrix, Eigen::Unaligned, Eigen::OuterStride<>>;

inline MatMap View(float* data, Index rows, Index cols, Index stride) {
  return MatMap(data, rows, cols, Eigen::OuterStride<>(stride));
}
inline ConstMatMap ConstView(const float* data, Index rows, Index cols, Index stride) {
  return ConstMatMap(data, rows, cols, Eigen::OuterStride<>(stride));
}
// Rows [row, row + rows) of a scratch matrix, all columns.
inline MatMap Rows(RowMatrix& m, Index row, Index rows) {
  return View(m.data() + row * m.cols(), rows, m.cols(), m.cols());
}

struct Range {
  int begin, end;
  int size() const { return end - begin; }
};
// Share ith of nth of `count` items, cut at multiples of `align` (SIMD-friendly column slices).
inline Range Share(int count, int ith, int nth, int align = 1) {
  const int units = (count + align - 1) / align;
  return {std::min(count, units * ith / nth * align),
          std::min(count, units * (ith + 1) / nth * align)};
}

// c = a b (or c += a b with `accumulate`), computed as Eigen products of panels small enough
// for Eigen to pack them on the stack: its packing buffers above EIGEN_STACK_ALLOCATION_LIMIT
// (128 KiB) would be allocated on the heap at every call. Eigen blocks k and n the same way
// internally, so the panels cost only a call each. c, a, b: [m, n], [m, k], [k, n] blocks or
// maps with unit inner stride.
//
// One row (a decoded token) is one matrix-vector product over all of b instead: Eigen packs
// nothing for it (so nothing is allocated), and panels would cut one pass over b's rows into
// many short products that re-read c.
template <class C, class A, class B>
void Multiply(C&& c, const A& a, const B& b, bool accumulate = false) {
  constexpr Index kRows = 128, kDepth = 256, kCols = 128;  // panels of 128 KiB at most
  const Index m = c.rows(), n = c.cols(), k = a.cols();
  if (m == 1) {
    if (accumulate) {
      c.noalias() += a * b;
    } else {
      c.noalias() = a * b;
    }
    return;
  }
  for (Index k0 = 0; k0 < k; k0 += kDepth) {
    const Index kd = std::min(kDepth, k - k0);
    for (Index i0 = 0; i0 < m; i0 += kRows) {
      const Index md = std::min(kRows, m - i0);
      for (Index j0 = 0; j0 < n; j0 += kCols) {
        const Index nd = std::min(kCols, n - j0);
        auto target = c.block(i0, j0, md, nd);
        const auto product = a.block(i0, k0, md, kd) * b.block(k0, j0, kd, nd);
        if (k0 == 0 && !accumulate) {
          target.noalias() = product;
        } else {
          target.noalias() += product;
        }
      }
    }
  }
}

// A barrier of the enclosing OpenMP region (nothing on one thread).
inline void Barrier(int nth) {
  if (nth > 1) {
#pragma omp barrier
  }
}

}  // namespace linalg
}  // namespace titans
