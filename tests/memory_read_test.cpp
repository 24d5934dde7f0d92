// MemorySession::Read: a read with the current fast weights that writes nothing.
#include <gtest/gtest.h>

#include <limits>
#include <memory>
#include <vector>

#include "titans/titans.hpp"

namespace titans {
namespace {

std::vector<float> Input(int tokens, int d, int seed) {
  std::vector<float> x(static_cast<size_t>(tokens) * d);
  for (size_t i = 0; i < x.size(); ++i) {
    x[i] = static_cast<float>(((i + 1) * (2654435761u + seed)) % 1000) / 500.0f - 1.0f;
  }
  return x;
}

TEST(MemoryRead, ReadsTheCurrentWeightsAndWritesNothing) {
  for (bool conv : {false, true}) {
    MemoryConfig config = MemoryConfig::Paper(16, 2, 8, 2, 4);
    config.conv_kernel = conv ? 3 : 0;
    auto memory = std::make_shared<const NeuralMemory>(config, MemoryWeights::Random(config, 4));
    MemorySession session(memory, SessionOptions{1});
    std::vector<float> out(8 * 16);
    session.Forward(Input(8, 16, 1), out);  // two units written: the weights moved from W0

    // With read = chunk, offset 0, the first token of a unit reads the current weights: a
    // Forward of one token on a clone (whose query tail is as fresh as Read's) reads what
    // Read reads, when there is no convolution history to differ.
    const std::vector<float> query = Input(1, 16, 2);
    std::vector<float> read(16), forward(16);
    const MemoryState before = session.state();
    session.Read(query, read);
    if (!conv) {
      MemorySession clone = session.Clone();
      clone.Forward(query, forward);
      EXPECT_EQ(read, forward);
    }
    // Nothing but the read path's query tail changed.
    const auto a = before.Tensors(config), b = session.state().Tensors(config);
    for (size_t i = 0; i < a.size(); ++i) {
      if (a[i].name == "conv_q_read") continue;
      EXPECT_EQ(std::vector<float>(a[i].data, a[i].data + a[i].size()),
                std::vector<float>(b[i].data, b[i].data + b[i].size()))
          << a[i].name;
    }
    EXPECT_EQ(session.position(), 8);
    // The read depends on the weights: a fresh session (W0) reads something else.
    MemorySession fresh(memory, SessionOptions{1});
    std::vector<float> initial(16);
    fresh.Read(query, initial);
    EXPECT_NE(read, initial);
    // Bad input is rejected like Forward's.
    std::vector<float> nan_query = query;
    nan_query[3] = std::numeric_limits<float>::quiet_NaN();
    EXPECT_THROW(session.Read(nan_query, read), Error);
  }
}

}  // namespace
}  // namespace titans
