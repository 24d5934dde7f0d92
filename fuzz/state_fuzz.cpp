// libFuzzer target: the state loaders (Session::Load, MemorySession::Load) of a fixed small
// model on arbitrary bytes. A bad file must end in a titans::Error and leave the session as it
// was (checked: it still runs and its position is unchanged); a good one must run on, or end
// in a titans::Error when its values, finite but huge, overflow in the forward pass (the engine
// checks every memory input and refuses non-finite ones: found by this target, a state whose
// attention values were 1e38).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "fuzz_input.hpp"
#include "titans/titans.hpp"

namespace {

// The model whose state files the seed corpus holds (fuzz/make_corpus.sh writes both).
std::shared_ptr<const titans::Model> SeedModel() {
  static const auto model = titans::Model::Load(TITANS_FUZZ_STATE_MODEL);
  return model;
}

void RunOn(titans::Session& session) {
  const std::vector<int32_t> tokens = {1, 2, 3};
  std::vector<float> logits(tokens.size() *
                            static_cast<size_t>(session.model().config().vocab_size));
  session.Forward(tokens, logits);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = titans::fuzz::InputFile(data, size);
  titans::Session session(SeedModel(), titans::SessionOptions{1});
  RunOn(session);  // position 3, so that a failed Load has something to keep
  try {
    session.Load(path);
  } catch (const titans::Error&) {
    if (session.position() != 3) __builtin_trap();  // a failed Load changed the session
    RunOn(session);                                 // and it still runs
  }
  try {
    RunOn(session);
  } catch (const titans::Error&) {
  }

  titans::MemorySession memory(SeedModel()->memory(0), titans::SessionOptions{1});  // layer 0: mag
  try {
    memory.Load(path);
    std::vector<float> x(static_cast<size_t>(memory.memory().config().d_model), 0.5f);
    std::vector<float> out(static_cast<size_t>(memory.memory().output_width()));
    memory.Forward(x, out);
  } catch (const titans::Error&) {
  }
  return 0;
}
