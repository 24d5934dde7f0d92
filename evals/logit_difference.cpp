// The logit difference of two models over the same tokens (titans/evals/logit_difference.hpp).
#include "titans/evals/logit_difference.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <utility>
#include <vector>

#include "titans/error.hpp"
#include "titans/session.hpp"

namespace titans::eval {

LogitDifference CompareLogits(std::shared_ptr<const Model> a, std::shared_ptr<const Model> b,
                              std::span<const int32_t> tokens, int threads) {
  const int vocab = a->config().vocab_size;
  if (tokens.empty() || vocab <= 0 || b->config().vocab_size != vocab) {
    throw Error(ErrorCode::kInvalidArgument,
                "CompareLogits needs tokens and two token models of one vocabulary, got " +
                    std::to_string(tokens.size()) + " tokens, vocabularies " +
                    std::to_string(vocab) + " and " + std::to_string(b->config().vocab_size));
  }
  constexpr size_t kPiece = 64;
  const auto v = static_cast<size_t>(vocab);
  Session sa(std::move(a), SessionOptions{threads}), sb(std::move(b), SessionOptions{threads});
  std::vector<float> la(kPiece * v), lb(kPiece * v);
  double diff2 = 0, norm2 = 0;
  LogitDifference d;
  int64_t agree = 0;
  for (size_t at = 0; at < tokens.size(); at += kPiece) {
    const std::span<const int32_t> piece = tokens.subspan(at, std::min(kPiece, tokens.size() - at));
    const size_t n = piece.size() * v;
    sa.Forward(piece, std::span(la).first(n));
    sb.Forward(piece, std::span(lb).first(n));
    for (size_t i = 0; i < n; ++i) {
      const double diff = static_cast<double>(la[i]) - lb[i];
      diff2 += diff * diff;
      norm2 += static_cast<double>(lb[i]) * lb[i];
      d.max_abs = std::max(d.max_abs, std::abs(diff));
    }
    for (size_t row = 0; row < n; row += v) {
      const float *ra = la.data() + row, *rb = lb.data() + row;
      agree += std::max_element(ra, ra + v) - ra == std::max_element(rb, rb + v) - rb ? 1 : 0;
    }
  }
  d.tokens = static_cast<int64_t>(tokens.size());
  // Equal logits are no difference even when they are all zero (0 / 0).
  d.relative = diff2 == 0 ? 0.0 : std::sqrt(diff2 / norm2);
  d.top1_agreement = static_cast<double>(agree) / static_cast<double>(d.tokens);
  return d;
}

std::string LogitDifferenceText(const LogitDifference& d) {
  char text[128];
  // Two decimals of the percentage: one disagreeing position in 1024 still shows (99.90%).
  std::snprintf(text, sizeof text, "relative %.3g, max abs %.3g, top-1 agreement %.2f%%",
                d.relative, d.max_abs, 100.0 * d.top1_agreement);
  return text;
}

}  // namespace titans::eval
