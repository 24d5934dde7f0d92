#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <span>
#include <utility>

#include "memory/batch.hpp"
#include "memory/kernels.hpp"
#include "ops/bf16.hpp"
#include "ops/flush_denormals.hpp"
#include "ops/linalg.hpp"
#include "ops/threading.hpp"
#include "titans/error.hpp"
#include "titans/memory.hpp"

namespace titans {

static_assert(SessionOptions{}.min_flops_per_thread == ops::kMinFlopsPerThread,
              "one default for the threading rule (src/ops/threading.hpp)");

MemorySession::MemorySession(std::shared_ptr<const NeuralMemory> memory, SessionOptions options)
    : memory_(std::move(memory)), options_(options) {
  if (!memory_) throw Error(ErrorCode::kInvalidArgument, "MemorySession needs a memory");
  if (options_.threads < 0) {
    throw Error(ErrorCode::kInvalidArgument, "SessionOptions::threads must be >= 0");
  }
  if (options_.threads == 0) options_.threads = omp_get_max_threads();
  state_ = MemoryState::Initial(*memory_);
  workspace_ = std::make_unique<Workspace>(*memory_, options_);
}

MemorySession::~MemorySession() = default;
MemorySession::MemorySession(MemorySession&&) noexcept = default;
MemorySession& MemorySession::operator=(MemorySession&&) noexcept = default;

WeightTrajectory::WeightTrajectory(const MemoryConfig& config, int capacity)
    : values_per_step_(ValuesPerStep(config)), capacity_(std::max(capacity, 0)) {
  data_.assign(static_cast<size_t>(values_per_step_ * capacity_), 0.0f);
}

int64_t WeightTrajectory::ValuesPerStep(const MemoryConfig& config) {
  int64_t values = 0;
  for (int i = 0; i < config.model_tensors(); ++i) {
    values += int64_t{config.tensor_rows(i)} * config.tensor_cols(i);
  }
  if (config.output == MemoryOutput::kLnResidual) values += config.head_dim;
  return values * config.heads;
}

void MemorySession::Forward(std::span<const float> store, std::span<float> out) {
  Forward(store, store, out);
}

namespace {

// Checks the inputs of one call before anything is touched, so a rejected call changes
// nothing; returns the number of tokens. `values` is the store input's value view (the store
// input itself unless the caller has separate views).
size_t CheckedTokens(const NeuralMemory& memory, std::span<const float> store,
                     std::span<const float> values, std::span<const float> retrieve,
                     std::span<float> out) {
  const size_t d = static_cast<size_t>(memory.input_width());
  const size_t d_out = static_cast<size_t>(memory.output_width());
  if (store.size() % d != 0) {
    throw Error(ErrorCode::kInvalidArgument, "store input has " + std::to_string(store.size()) +
                                                 " values, not a multiple of the memory width " +
                                                 std::to_string(d));
  }
  const size_t n = store.size() / d;
  if (n > static_cast<size_t>(std::numeric_limits<int>::max())) {
    throw Error(ErrorCode::kInvalidArgument, "too many tokens in one call; split the input");
  }
  struct Named {
    std::span<const float> input;
    const char* name;
  };
  const Named inputs[] = {{store, "store"}, {values, "store value"}, {retrieve, "retrieve"}};
  for (const Named& other : std::span(inputs).subspan(1)) {
    if (other.input.size() != store.size()) {
      throw Error(ErrorCode::kInvalidArgument,
                  std::string(other.name) + " input has " + std::to_string(other.input.size()) +
                      " values, the store input " + std::to_string(store.size()));
    }
  }
  if (out.size() != n * d_out) {
    throw Error(ErrorCode::kInvalidArgument, "output has room for " + std::to_string(out.size()) +
                                                 " values, " + std::to_string(n) + " tokens need " +
                                                 std::to_string(n * d_out));
  }
  for (size_t k = 0; k < std::size(inputs); ++k) {
    const std::span<const float> input = inputs[k].input;
    bool seen = false;  // one input in several roles is checked once
    for (size_t j = 0; j < k; ++j) seen = seen || inputs[j].input.data() == input.data();
    if (seen || linalg::simd::AllFinite(input.data(), static_cast<linalg::Index>(input.size()))) {
      continue;
    }
    for (size_t i = 0; i < input.size(); ++i) {
      if (!std::isfinite(input[i])) {
        throw Error(ErrorCode::kInvalidArgument,
                    std::string(inputs[k].name) + " input is not finite at token " +
                        std::to_string(i / d) + ", feature " + std::to_string(i % d));
      }
    }
  }
  return n;
}

}  // namespace

void MemorySession::Forward(std::span<const float> store, std::span<const float> retrieve,
                            std::span<float> out) {
  Forward(store, store, retrieve, out);
}

void MemorySession::Forward(std::span<const float> keys, std::span<const float> values,
                            std::span<const float> retrieve, std::span<float> out) {
  Forward(keys, values, retrieve, out, WeightResidual{});
}

void MemorySession::Forward(std::span<const float> keys, std::span<const float> values,
                            std::span<const float> retrieve, std::span<float> out,
                            WeightResidual residual) {
  const size_t n = CheckedTokens(*memory_, keys, values, retrieve, out);
  const MemoryConfig& c = memory_->config();
  if (residual.previous != nullptr || residual.record != nullptr) {
    auto fail = [](const std::string& why) {
      throw Error(ErrorCode::kInvalidArgument, "weight residual: " + why);
    };
    if (!c.weight_residual) fail("this memory's config has no weight_residual");
    const int64_t steps = (state_.pending + static_cast<int64_t>(n)) / c.unit();
    for (const WeightTrajectory* t :
         {residual.previous, static_cast<const WeightTrajectory*>(residual.record)}) {
      if (t != nullptr && t->values_per_step() != WeightTrajectory::ValuesPerStep(c)) {
        fail("a trajectory of another memory config");
      }
    }
    if (residual.previous != nullptr && residual.previous->steps() < steps) {
      fail("the previous layer's trajectory has " + std::to_string(residual.previous->steps()) +
           " steps, this call writes " + std::to_string(steps));
    }
    if (residual.record != nullptr && residual.record->capacity() < steps) {
      fail("the trajectory to record has room for " + std::to_string(residual.record->capacity()) +
           " steps, this call writes " + std::to_string(steps));
    }
  }
  if (residual.record != nullptr) residual.record->steps_ = 0;
  if (n == 0) return;
  workspace_->Run(*memory_, state_, Workspace::Inputs{keys.data(), values.data(), retrieve.data()},
                  static_cast<int>(n), out.data(), residual);
}

void MemorySession::Read(std::span<const float> retrieve, std::span<float> out) {
  const size_t n = CheckedTokens(*memory_, retrieve, retrieve, retrieve, out);
  if (n == 0) return;
  workspace_->ReadOnly(*memory_, state_, retrieve.data(), static_cast<int>(n), out.data());
}

void MemorySession::SetState(MemoryState state) {
  const MemoryConfig& c = memory_->config();
  const MemoryState sizes = MemoryState::Initial(*memory_);
  const auto want = sizes.Tensors(c);
  const auto have = std::as_const(state).Tensors(c);
  for (size_t i = 0; i < want.size(); ++i) {
    if (have[i].size() != want[i].size()) {
      throw Error(ErrorCode::kMismatch, "memory state tensor '" + want[i].name + "' has " +
                                            std::to_string(have[i].size()) +
                                            " values, this memory needs " +
                                            std::to_string(want[i].size()));
    }
    for (int64_t j = 0; j < have[i].size(); ++j) {
      if (!std::isfinite(have[i].data[j])) {
        throw Error(ErrorCode::kInvalidArgument, "memory state tensor '" + want[i].name +
                                                     "' is not finite at flat index " +
                                                     std::to_string(j));
      }
    }
  }
  // A unit is written as soon as its last token arrives and units start at position 0, so the
  // tokens waiting are exactly position mod U.
  if (state.position < 0 || state.pending != state.position % c.unit()) {
    throw Error(ErrorCode::kInvalidArgument,
                "memory state: pending " + std::to_string(state.pending) +
                    " does not match position " + std::to_string(state.position) +
                    " (it must be position mod " + std::to_string(c.unit()) + ")");
  }
  state_ = std::move(state);
}

namespace {

// Adds the squares of `values` to `sum_sq` (in double: a million float squares); false if any
// value is NaN or Inf.
bool AddSquares(std::span<const float> values, double& sum_sq) {
  bool finite = true;
  for (const float v : values) {
    finite = finite && std::isfinite(v);
    sum_sq += static_cast<double>(v) * v;
  }
  return finite;
}

}  // namespace

MemoryHealth MemorySession::Health() const {
  const MemoryWeights& w0 = memory_->weights();
  double weights = 0.0, initial = 0.0, momentum = 0.0;
  bool finite = true;
  for (const auto& layer : state_.w_cur) finite = AddSquares(layer, weights) && finite;
  finite = AddSquares(state_.g_cur, weights) && finite;
  for (const auto& layer : state_.momentum) finite = AddSquares(layer, momentum) && finite;
  finite = AddSquares(state_.g_momentum, momentum) && finite;
  for (const auto& layer : state_.momentum_high) finite = AddSquares(layer, momentum) && finite;
  finite = AddSquares(state_.g_momentum_high, momentum) && finite;
  for (const auto& layer : w0.mlp) AddSquares(layer, initial);
  AddSquares(w0.gain, initial);
  MemoryHealth h;
  h.position = state_.position;
  h.weights_norm = std::sqrt(weights);
  h.initial_norm = std::sqrt(initial);
  h.momentum_norm = std::sqrt(momentum);
  h.finite = finite;
  h.all_zero = weights == 0.0;
  return h;
}

MemoryBatch::MemoryBatch(std::shared_ptr<const NeuralMemory> memory, const SessionOptions& options)
    : memory_(std::move(memory)),
      options_(options),
      projections_(std::make_unique<MemorySession::Workspace>(*memory_, SessionOptions{1})) {}

MemoryBatch::~MemoryBatch() = default;

void MemoryBatch::Forward(std::span<MemorySession* const> sessions, const float* store,
                          const float* retrieve, float* out) {
  Run(sessions, store, retrieve, out, /*write=*/true);
}

void MemoryBatch::Read(std::span<MemorySession* const> sessions, const float* retrieve,
                       float* out) {
  Run(sessions, retrieve, retrieve, out, /*write=*/false);
}

void MemoryBatch::Run(std::span<MemorySession* const> sessions, const float* store,
                      const float* retrieve, float* out, bool write) {
  const size_t n = sessions.size(), d = static_cast<size_t>(memory_->input_width());
  const size_t d_out = static_cast<size_t>(memory_->output_width());
  const std::span<const float> store_rows(store, n * d);
  CheckedTokens(*memory_, store_rows, store_rows, std::span<const float>(retrieve, n * d),
                std::span<float>(out, n * d_out));
  using Workspace = MemorySession::Workspace;
  const MemoryConfig& c = memory_->config();
  for (size_t t0 = 0; t0 < n; t0 += Workspace::kTile) {
    const int rows = static_cast<int>(std::min<size_t>(Workspace::kTile, n - t0));
    // Threads: projections split by rows, then sessions handed out one at a time (a session
    // whose token completes a unit costs a unit's write, the others a read). The work between
    // the two synchronisations is about FlopsPerToken per session (the write amortised).
    const int team = ops::TeamSize(c.FlopsPerToken() * rows, options_.threads,
                                   options_.min_flops_per_thread, rows);
    std::atomic<int> next{0};
    const auto share = [&](int ith, int nth) {
      const FlushDenormals flush;  // on every thread that computes (ops/flush_denormals.hpp)
      // ProjectRows also lays a state's convolution tails before the rows; RunProjected takes
      // each session's own instead.
      const float* keys = write ? store + t0 * d : nullptr;
      projections_->ProjectRows(*memory_, sessions[t0]->state_,
                                Workspace::Inputs{keys, keys, retrieve + t0 * d}, rows, write,
                                Workspace::Part{ith, nth});
      linalg::Barrier(nth);  // every row is projected before any session takes its row
      for (int i = next.fetch_add(1, std::memory_order_relaxed); i < rows;
           i = next.fetch_add(1, std::memory_order_relaxed)) {
        MemorySession& session = *sessions[t0 + static_cast<size_t>(i)];
        session.workspace_->RunProjected(*memory_, session.state_, *projections_, i,
                                         out + (t0 + static_cast<size_t>(i)) * d_out, write);
      }
    };
    if (team == 1) {
      share(0, 1);
    } else {
#pragma omp parallel num_threads(team)
      share(omp_get_thread_num(), omp_get_num_threads());
    }
  }
}

void MemorySession::Reset() { state_ = MemoryState::Initial(*memory_); }

MemorySession MemorySession::Clone() const {
  MemorySession copy(memory_, options_);
  copy.state_ = state_;
  return copy;
}

}  // namespace titans
