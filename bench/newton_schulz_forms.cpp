// Newton-Schulz forms (issue 10's 5x question, docs/PERFORMANCE.md "What 5x would take"): the
// iteration as titans-pytorch's newtonschulz5 computes it (the engine's form) against three
// forms equal to it in exact arithmetic, on one 64 x 128 update (train_mac's memory layer):
//   gram      A = X X^T once; P_k = a I + b A_k + c A_k^2, A_{k+1} = P_k A_k P_k, X <- (prod P) X
//   gram_sym  the same with only the lower half of each (symmetric) product computed
//   eigen     A = V diag(l) V^T, the scalar recurrence on each eigenvalue, X <- V diag(q) V^T X
// For each of three updates (well-conditioned, singular values 0.8^i, a momentum-like sum of
// rank-4 terms): microseconds per call, and the largest difference from the float64 iteration.
// Run: build/release/bench/titans_newton_schulz_forms
#include <Eigen/Dense>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>

namespace {

using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatrixD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
constexpr float kA = 3.4445f, kB = -4.7750f, kC = 2.0315f;  // titans-pytorch's coefficients

template <class M>
M AsTitansPytorch(M x) {
  x /= x.norm();
  M a, b, y;
  for (int i = 0; i < 5; ++i) {
    a.noalias() = x * x.transpose();
    b.noalias() = a * a;
    b = kC * b + kB * a;
    y.noalias() = b * x;
    x = kA * x + y;
  }
  return x;
}

// c = the lower half of a b, mirrored (a b is symmetric here: polynomials of one matrix).
void SymmetricProduct(Matrix& c, const Matrix& a, const Matrix& b) {
  c.triangularView<Eigen::Lower>() = a * b;
  c.triangularView<Eigen::StrictlyUpper>() = c.transpose();
}

template <bool kSymmetric>
Matrix Gram(Matrix x) {
  x /= x.norm();
  const Eigen::Index r = x.rows();
  Matrix a = Matrix::Zero(r, r), a2(r, r), p(r, r), q(r, r), t(r, r);
  auto product = [](Matrix& c, const Matrix& l, const Matrix& rhs) {
    if constexpr (kSymmetric) {
      SymmetricProduct(c, l, rhs);
    } else {
      c.noalias() = l * rhs;
    }
  };
  a.noalias() = x * x.transpose();
  for (int i = 0; i < 5; ++i) {
    product(a2, a, a);
    p = kC * a2 + kB * a;
    p.diagonal().array() += kA;
    if (i == 0) {
      q = p;
    } else {
      product(t, p, q);
      q = t;
    }
    if (i < 4) {
      product(t, p, a);
      product(a, t, p);
    }
  }
  Matrix y(r, x.cols());
  y.noalias() = q * x;
  return y;
}

Matrix Eigendecomposition(Matrix x) {
  x /= x.norm();
  Matrix a(x.rows(), x.rows());
  a.noalias() = x * x.transpose();
  const Eigen::SelfAdjointEigenSolver<Matrix> solver(a);
  Eigen::VectorXf l = solver.eigenvalues(), q = Eigen::VectorXf::Ones(l.size());
  for (int i = 0; i < 5; ++i) {
    for (Eigen::Index j = 0; j < l.size(); ++j) {
      const float p = kA + kB * l[j] + kC * l[j] * l[j];
      q[j] *= p;
      l[j] *= p * p;
    }
  }
  const Matrix& v = solver.eigenvectors();
  const Matrix t = q.asDiagonal() * (v.transpose() * x);
  return v * t;
}

template <class F>
double MicrosecondsPerCall(F f, const Matrix& x) {
  constexpr int kCalls = 2000;
  volatile float sink = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kCalls; ++i) sink = sink + f(x)(0, 0);
  const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
  return took.count() / kCalls * 1e6;
}

}  // namespace

int main() {
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  auto random = [&](Eigen::Index rows, Eigen::Index cols) {
    Matrix m(rows, cols);
    for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = normal(rng);
    return m;
  };
  const char* names[] = {"well-conditioned", "singular values 0.8^i", "momentum-like"};
  for (int kind = 0; kind < 3; ++kind) {
    Matrix x = random(64, 128);
    if (kind == 1) {
      const Eigen::JacobiSVD<Matrix> svd(x, Eigen::ComputeThinU | Eigen::ComputeThinV);
      Eigen::VectorXf s(64);
      for (int i = 0; i < 64; ++i) s[i] = std::pow(0.8f, static_cast<float>(i));
      x = svd.matrixU() * s.asDiagonal() * svd.matrixV().transpose();
    } else if (kind == 2) {  // S = 0.9 S + (a rank-4 chunk gradient), ten chunks
      x.setZero();
      for (int k = 0; k < 10; ++k) x = 0.9f * x + random(64, 4) * random(4, 128);
    }
    const MatrixD exact = AsTitansPytorch<MatrixD>(x.cast<double>());
    auto error = [&](const Matrix& m) { return (m.cast<double>() - exact).cwiseAbs().maxCoeff(); };
    std::printf("%s (largest entry %.3g): error / us per call\n", names[kind],
                exact.cwiseAbs().maxCoeff());
    std::printf("  titans-pytorch form %.2g / %.1f\n", error(AsTitansPytorch<Matrix>(x)),
                MicrosecondsPerCall(AsTitansPytorch<Matrix>, x));
    std::printf("  gram                %.2g / %.1f\n", error(Gram<false>(x)),
                MicrosecondsPerCall(Gram<false>, x));
    std::printf("  gram_sym            %.2g / %.1f\n", error(Gram<true>(x)),
                MicrosecondsPerCall(Gram<true>, x));
    std::printf("  eigen               %.2g / %.1f\n", error(Eigendecomposition(x)),
                MicrosecondsPerCall(Eigendecomposition, x));
  }
}
