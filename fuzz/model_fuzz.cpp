// libFuzzer target: Model::Load on arbitrary bytes (header, config JSON, tensors), then, when a
// file loads, a short stream through it: a loaded model must run. Every bad file must end in a
// titans::Error, with allocations bounded by what the file holds (run with -rss_limit_mb).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "fuzz_input.hpp"
#include "titans/titans.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const std::shared_ptr<const titans::Model> model =
        titans::Model::Load(titans::fuzz::InputFile(data, size));
    const titans::ModelConfig& c = model->config();
    titans::Session session(model, titans::SessionOptions{1});
    if (c.vocab_size > 0) {
      const std::vector<int32_t> tokens = {0, static_cast<int32_t>(c.vocab_size - 1), 0};
      std::vector<float> logits(tokens.size() * static_cast<size_t>(c.vocab_size));
      session.Forward(tokens, logits);
    }
  } catch (const titans::Error&) {
  }
  return 0;
}
