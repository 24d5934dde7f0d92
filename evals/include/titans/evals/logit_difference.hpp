// titans/evals/logit_difference.hpp: how far one model's logits are from another's over the same
// tokens. `titans bench --weights bf16` and `titans niah --weights bf16` report a bf16 model
// against its float32 form with it (docs/CLI.md): a kBf16 model computes exactly what the
// float32 model with the rounded weights computes (docs/SEMANTICS.md 3.5), so the difference is
// what rounding the product matrices costs on that model and text.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "titans/model.hpp"

namespace titans::eval {

struct LogitDifference {
  int64_t tokens = 0;         // n, the positions compared
  double relative = 0;        // ||la - lb|| / ||lb||, Euclidean over all n x V logits
  double max_abs = 0;         // max |la - lb| over them
  double top1_agreement = 0;  // the fraction of the n positions whose argmax tokens are equal
};

// One fresh Session of each model (SessionOptions{threads}) over `tokens` [n], both fed the same
// pieces of 64 tokens (the engine's own piece), so that only the models differ; la, lb [n, V]
// are `a`'s and `b`'s logits, compared piece by piece (nothing of size n x V is kept). Sums in
// double; an argmax tie goes to the lowest token. Throws Error(kInvalidArgument) for no tokens,
// models without a vocabulary (vocab_size 0) or of different vocabularies; a token outside the
// vocabulary and model errors propagate.
LogitDifference CompareLogits(std::shared_ptr<const Model> a, std::shared_ptr<const Model> b,
                              std::span<const int32_t> tokens, int threads);

// "relative X, max abs Y, top-1 agreement Z%": the figures as the titans program prints them.
std::string LogitDifferenceText(const LogitDifference& d);

}  // namespace titans::eval
