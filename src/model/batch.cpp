// BatchDecoder: one decode step, or a prefill, of many sessions of one model
// (include/titans/session.hpp). This file checks the inputs and keeps the sessions whole; the
// architecture's BatchRunner (src/model/arch/titans.cpp) runs the step or the prefill.
#include <omp.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "model/arch/architecture.hpp"
#include "model/session_state.hpp"
#include "ops/flush_denormals.hpp"
#include "titans/error.hpp"
#include "titans/session.hpp"

namespace titans {

struct BatchDecoder::Impl {
  int max_batch = 0;
  std::unique_ptr<arch::BatchRunner> runner;  // null: the sessions decode one by one
  std::vector<session::State*> states;        // [max_batch] the step's states
};

BatchDecoder::BatchDecoder(std::shared_ptr<const Model> model, int max_batch,
                           SessionOptions options)
    : model_(std::move(model)) {
  if (!model_) throw Error(ErrorCode::kInvalidArgument, "BatchDecoder needs a model");
  if (max_batch < 1) {
    throw Error(ErrorCode::kInvalidArgument,
                "BatchDecoder: max_batch must be >= 1, not " + std::to_string(max_batch));
  }
  if (model_->config().vocab_size == 0) {
    throw Error(ErrorCode::kInvalidArgument,
                "BatchDecoder: this model takes input embeddings (vocab_size 0), not tokens");
  }
  if (options.threads < 0) {
    throw Error(ErrorCode::kInvalidArgument, "SessionOptions::threads must be >= 0");
  }
  if (options.threads == 0) options.threads = omp_get_max_threads();
  impl_ = std::make_unique<Impl>();
  impl_->max_batch = max_batch;
  if (model_->config().architecture == Architecture::kTitans) {
    impl_->runner = arch::MakeTitansBatch(*model_, options, max_batch);
  }
  impl_->states.resize(static_cast<size_t>(max_batch));
}

BatchDecoder::~BatchDecoder() = default;
BatchDecoder::BatchDecoder(BatchDecoder&&) noexcept = default;
BatchDecoder& BatchDecoder::operator=(BatchDecoder&&) noexcept = default;

int BatchDecoder::max_batch() const { return impl_->max_batch; }
const Model& BatchDecoder::model() const { return *model_; }

void BatchDecoder::CheckSessions(const char* what, std::span<Session* const> sessions) const {
  // Messages are made only on error: a call allocates nothing.
  const auto refuse = [what](size_t i, const std::string& why) {
    throw Error(ErrorCode::kInvalidArgument,
                std::string(what) + ": session " + std::to_string(i) + " " + why);
  };
  if (sessions.size() > static_cast<size_t>(impl_->max_batch)) {
    throw Error(ErrorCode::kInvalidArgument, std::string(what) + ": " +
                                                 std::to_string(sessions.size()) +
                                                 " sessions, the decoder was made for " +
                                                 std::to_string(impl_->max_batch) + " at most");
  }
  for (size_t i = 0; i < sessions.size(); ++i) {
    if (sessions[i] == nullptr) refuse(i, "is null");
    if (sessions[i]->model_ != model_) refuse(i, "runs another model than the decoder");
    // Quadratic, but max_batch is small and this allocates nothing.
    for (size_t j = 0; j < i; ++j) {
      if (sessions[j] == sessions[i]) refuse(i, "is session " + std::to_string(j) + " again");
    }
  }
}

template <class Run>
void BatchDecoder::RunBatch(const char* what, std::span<Session* const> sessions, Run run) {
  const size_t n = sessions.size();
  for (size_t i = 0; i < n; ++i) impl_->states[i] = &sessions[i]->impl_->state;
  try {
    run(std::span<session::State* const>(impl_->states.data(), n));
  } catch (const Error& e) {
    // The inputs were checked: what fails is a value of some session's stack that overflowed
    // (as in Session::Run), after every session has taken the layers before it.
    for (size_t i = 0; i < n; ++i) {
      sessions[i]->impl_->broken = std::string(what) + " of " + std::to_string(n) +
                                   " sessions (this one as session " + std::to_string(i) +
                                   ") failed: " + e.what();
    }
    throw Error(ErrorCode::kNumerical, std::string(what) + ": " + e.what());
  }
}

void BatchDecoder::Step(std::span<Session* const> sessions, std::span<const int32_t> tokens,
                        std::span<float> logits) {
  const FlushDenormals flush;  // as Session::Forward (src/ops/flush_denormals.hpp)
  const size_t n = sessions.size(), vocab = static_cast<size_t>(model_->config().vocab_size);
  CheckSessions("BatchDecoder::Step", sessions);
  if (tokens.size() != n || logits.size() != n * vocab) {
    throw Error(ErrorCode::kInvalidArgument,
                "BatchDecoder::Step: " + std::to_string(n) + " sessions need " + std::to_string(n) +
                    " tokens and " + std::to_string(n * vocab) + " logits, not " +
                    std::to_string(tokens.size()) + " and " + std::to_string(logits.size()));
  }
  for (size_t i = 0; i < n; ++i) {
    if (tokens[i] < 0 || static_cast<size_t>(tokens[i]) >= vocab) {
      throw Error(ErrorCode::kInvalidArgument, "BatchDecoder::Step: session " + std::to_string(i) +
                                                   " has token " + std::to_string(tokens[i]) +
                                                   ", outside the vocabulary [0, " +
                                                   std::to_string(vocab) + ")");
    }
  }
  for (Session* session : sessions) session->RequireUsable("BatchDecoder::Step");
  if (n == 0) return;

  if (impl_->runner == nullptr) {
    for (size_t i = 0; i < n; ++i)
      sessions[i]->Run(&tokens[i], nullptr, 1, &logits[i * vocab], nullptr);
    return;
  }
  RunBatch("BatchDecoder::Step", sessions, [&](std::span<session::State* const> states) {
    impl_->runner->Step(states, tokens.data(), logits.data());
  });
}

void BatchDecoder::Prefill(std::span<Session* const> sessions,
                           std::span<const std::span<const int32_t>> prompts,
                           std::span<float> logits) {
  const FlushDenormals flush;  // as Session::Forward (src/ops/flush_denormals.hpp)
  const size_t n = sessions.size(), vocab = static_cast<size_t>(model_->config().vocab_size);
  CheckSessions("BatchDecoder::Prefill", sessions);
  size_t total = 0;
  for (const std::span<const int32_t> prompt : prompts) total += prompt.size();
  if (prompts.size() != n || logits.size() != total * vocab) {
    throw Error(ErrorCode::kInvalidArgument,
                "BatchDecoder::Prefill: " + std::to_string(n) + " sessions need " +
                    std::to_string(n) + " prompts, and their " + std::to_string(total) +
                    " tokens " + std::to_string(total * vocab) + " logits, not " +
                    std::to_string(prompts.size()) + " prompts and " +
                    std::to_string(logits.size()) + " logits");
  }
  for (size_t i = 0; i < n; ++i) {
    for (size_t t = 0; t < prompts[i].size(); ++t) {
      const int32_t token = prompts[i][t];
      if (token < 0 || static_cast<size_t>(token) >= vocab) {
        throw Error(ErrorCode::kInvalidArgument,
                    "BatchDecoder::Prefill: session " + std::to_string(i) + " has token " +
                        std::to_string(token) + " at index " + std::to_string(t) +
                        " of its prompt, outside the vocabulary [0, " + std::to_string(vocab) +
                        ")");
      }
    }
  }
  for (Session* session : sessions) session->RequireUsable("BatchDecoder::Prefill");
  if (total == 0) return;

  if (impl_->runner == nullptr) {
    size_t row = 0;
    for (size_t i = 0; i < n; ++i) {
      if (prompts[i].empty()) continue;
      sessions[i]->Run(prompts[i].data(), nullptr, static_cast<int64_t>(prompts[i].size()),
                       &logits[row * vocab], nullptr);
      row += prompts[i].size();
    }
    return;
  }
  RunBatch("BatchDecoder::Prefill", sessions, [&](std::span<session::State* const> states) {
    impl_->runner->Prefill(states, prompts, logits.data());
  });
}

}  // namespace titans
