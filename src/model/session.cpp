// Session: a Model run over a stream. This file checks the inputs, makes, resets and clones the
// stream's state (src/model/session_state.hpp) and generates; the model's architecture runs it
// (src/model/arch/: titans.cpp, titans_pytorch_mac.cpp), session_files.cpp saves and loads it,
// sampling.cpp draws tokens.
#include "titans/session.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <utility>
#include <vector>

#include "model/arch/architecture.hpp"
#include "model/session_state.hpp"
#include "ops/attention.hpp"
#include "ops/flush_denormals.hpp"
#include "ops/linalg.hpp"
#include "titans/error.hpp"

namespace titans {
using linalg::Index;

namespace {

// The runner of the model's architecture (src/model/arch/).
std::unique_ptr<arch::Runner> MakeRunner(const Model& model, const SessionOptions& options) {
  if (model.config().architecture == Architecture::kTitansPytorchMac) {
    return arch::MakeTitansPytorchMac(model, options);
  }
  return arch::MakeTitans(model, options);
}

}  // namespace

void Session::RequireUsable(const char* what) const {
  if (!impl_->broken.empty()) {
    throw Error(ErrorCode::kNumerical, std::string(what) + ": this session is broken (" +
                                           impl_->broken + "); Reset() or Load() it first");
  }
}

void Session::Run(const int32_t* tokens, const float* embeddings, int64_t n, float* logits,
                  float* hidden) {
  const int64_t position = impl_->state.position;
  try {
    impl_->runner->Run(impl_->state, tokens, embeddings, n, logits, hidden);
  } catch (const Error& e) {
    // The inputs were checked before the run: what fails inside it is a value of the stack
    // that overflowed (memory inputs are checked, as in MemorySession::Forward).
    impl_->broken = "the forward pass of tokens " + std::to_string(position) + ".." +
                    std::to_string(position + n - 1) + " failed: " + e.what();
    throw Error(ErrorCode::kNumerical, impl_->broken);
  }
}

Session::Session(std::shared_ptr<const Model> model, SessionOptions options)
    : model_(std::move(model)), options_(options) {
  if (!model_) throw Error(ErrorCode::kInvalidArgument, "Session needs a model");
  if (options_.threads < 0) {
    throw Error(ErrorCode::kInvalidArgument, "SessionOptions::threads must be >= 0");
  }
  if (options_.threads == 0) options_.threads = omp_get_max_threads();
  const ModelConfig& c = model_->config();
  impl_ = std::make_unique<Impl>();
  impl_->runner = MakeRunner(*model_, options_);
  session::State& state = impl_->state;
  for (size_t l = 0; l < c.layers.size(); ++l) {
    const BlockKind kind = c.layers[l];
    state.memory.push_back(HasMemory(kind) ? std::make_unique<MemorySession>(
                                                 model_->memory(static_cast<int>(l)), options_)
                                           : nullptr);
    state.attention.push_back(HasAttention(kind)
                                  ? std::make_unique<AttentionCache>(impl_->runner->CacheShape(l),
                                                                     session::kReservedCacheRows)
                                  : nullptr);
  }
}

Session::~Session() = default;
Session::Session(Session&&) noexcept = default;
Session& Session::operator=(Session&&) noexcept = default;

int64_t Session::position() const { return impl_->state.position; }
const Model& Session::model() const { return *model_; }

std::vector<LayerHealth> Session::Health() const {
  std::vector<LayerHealth> health;
  const auto& memory = impl_->state.memory;
  for (size_t l = 0; l < memory.size(); ++l) {
    if (memory[l]) health.push_back({static_cast<int>(l), memory[l]->Health()});
  }
  return health;
}

void Session::Forward(std::span<const int32_t> tokens, std::span<float> logits) {
  const FlushDenormals flush;  // the session's own arithmetic too (src/ops/flush_denormals.hpp)
  const ModelConfig& c = model_->config();
  const Index vocab = c.vocab_size, n = static_cast<Index>(tokens.size());
  if (vocab == 0) {
    throw Error(ErrorCode::kInvalidArgument,
                "this model takes input embeddings (vocab_size 0): use ForwardEmbeddings");
  }
  if (static_cast<Index>(logits.size()) != n * vocab) {
    throw Error(ErrorCode::kInvalidArgument,
                "logits have room for " + std::to_string(logits.size()) + " values, " +
                    std::to_string(n) + " tokens need " + std::to_string(n * vocab));
  }
  for (Index i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab) {
      throw Error(ErrorCode::kInvalidArgument,
                  "token " + std::to_string(tokens[i]) + " at index " + std::to_string(i) +
                      " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
    }
  }
  RequireUsable("Forward");
  Run(tokens.data(), nullptr, n, logits.data(), nullptr);
}

void Session::ForwardEmbeddings(std::span<const float> embeddings, std::span<float> hidden) {
  const FlushDenormals flush;
  const ModelConfig& c = model_->config();
  const Index d = c.d_model;
  if (embeddings.size() % static_cast<size_t>(d) != 0 || hidden.size() != embeddings.size()) {
    throw Error(ErrorCode::kInvalidArgument, "embeddings must be [n, " + std::to_string(d) +
                                                 "] and hidden the same size (" +
                                                 std::to_string(embeddings.size()) + " and " +
                                                 std::to_string(hidden.size()) + " values)");
  }
  for (size_t i = 0; i < embeddings.size(); ++i) {
    if (!std::isfinite(embeddings[i])) {
      throw Error(ErrorCode::kInvalidArgument, "input embedding is not finite at token " +
                                                   std::to_string(i / d) + ", feature " +
                                                   std::to_string(i % d));
    }
  }
  const Index n = static_cast<Index>(embeddings.size()) / d;
  RequireUsable("ForwardEmbeddings");
  Run(nullptr, embeddings.data(), n, nullptr, hidden.data());
}

std::vector<int32_t> Session::Generate(std::span<const int32_t> prompt, int max_new_tokens,
                                       const SamplerOptions& sampler) {
  const Index vocab = model_->config().vocab_size;
  if (max_new_tokens < 0) {
    throw Error(ErrorCode::kInvalidArgument, "max_new_tokens must be >= 0");
  }
  if (prompt.empty() && max_new_tokens > 0) {
    throw Error(ErrorCode::kInvalidArgument, "Generate needs a prompt of at least one token");
  }
  std::vector<float> logits(prompt.size() * static_cast<size_t>(vocab));
  Forward(prompt, logits);
  if (max_new_tokens == 0) return {};
  std::vector<int32_t> generated;
  generated.reserve(static_cast<size_t>(max_new_tokens));
  std::mt19937_64 rng(sampler.seed);
  std::span<const float> last(logits.data() + (prompt.size() - 1) * vocab,
                              static_cast<size_t>(vocab));
  std::vector<float> step_logits(static_cast<size_t>(vocab));
  for (int i = 0; i < max_new_tokens; ++i) {
    const int32_t token = SampleToken(last, sampler, rng);
    generated.push_back(token);
    if (i + 1 == max_new_tokens) break;  // the last token need not be fed
    Forward(std::span<const int32_t>(&generated.back(), 1), step_logits);
    last = step_logits;
  }
  return generated;
}

void Session::Reset() {
  session::State& state = impl_->state;
  for (auto& memory : state.memory) {
    if (memory) memory->Reset();
  }
  for (auto& cache : state.attention) {
    if (cache) cache->Reset();
  }
  state.position = 0;
  impl_->broken.clear();
}

void Session::ResetMemory() {
  RequireUsable("ResetMemory");
  session::State& state = impl_->state;
  // Every memory is checked before any is reset, so that a refused call changes nothing.
  for (size_t l = 0; l < state.memory.size(); ++l) {
    const MemorySession* memory = state.memory[l].get();
    if (memory == nullptr) continue;
    const MemoryState& s = memory->state();
    const int unit = memory->memory().config().unit();
    if (s.pending != 0) {
      throw Error(ErrorCode::kInvalidArgument,
                  "ResetMemory at position " + std::to_string(state.position) +
                      ": the memory of layer " + std::to_string(l) + " holds " +
                      std::to_string(s.pending) + " tokens of an unfinished unit of " +
                      std::to_string(unit) + " (its position is " + std::to_string(s.position) +
                      "); reset only where the memories' positions are multiples of their unit");
    }
    // The tails are kept and SetState checks them: a tail that overflowed is refused here.
    for (const std::vector<float>* tail : {&s.conv_q, &s.conv_k, &s.conv_v, &s.conv_q_read}) {
      for (float v : *tail) {
        if (!std::isfinite(v)) {
          throw Error(ErrorCode::kInvalidArgument, "ResetMemory: the convolution tail of layer " +
                                                       std::to_string(l) +
                                                       "'s memory is not finite");
        }
      }
    }
  }
  for (auto& memory : state.memory) {
    if (!memory) continue;
    const MemoryState& old = memory->state();
    MemoryState fresh = MemoryState::Initial(memory->memory());
    fresh.position = old.position;
    fresh.conv_q = old.conv_q;
    fresh.conv_k = old.conv_k;
    fresh.conv_v = old.conv_v;
    fresh.conv_q_read = old.conv_q_read;
    memory->SetState(std::move(fresh));
  }
}

Session Session::Clone() const {
  RequireUsable("Clone");
  Session copy(model_, options_);
  const session::State& from = impl_->state;
  session::State& to = copy.impl_->state;
  to.position = from.position;
  for (size_t l = 0; l < from.memory.size(); ++l) {
    if (from.memory[l]) {
      to.memory[l] = std::make_unique<MemorySession>(from.memory[l]->Clone());
    }
    if (from.attention[l]) {
      to.attention[l] = std::make_unique<AttentionCache>(*from.attention[l]);
    }
  }
  return copy;
}

}  // namespace titans
