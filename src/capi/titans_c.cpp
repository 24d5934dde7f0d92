// The C API (include/titans/titans.h) over the public C++ API: opaque handles that own a
// shared_ptr<const Model>, a Session or a sampler; every entry point runs its body inside
// Guard(), which turns every exception into a status code and the calling thread's last error
// message, so that no exception crosses the C boundary.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <new>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "titans/error.hpp"
#include "titans/model.hpp"
#include "titans/session.hpp"
#include "titans/titans.h"

#ifndef TITANS_VERSION_STRING
#error "TITANS_VERSION_STRING must be defined (src/CMakeLists.txt)"
#endif

struct titans_model {
  std::shared_ptr<const titans::Model> model;
};

struct titans_session {
  titans::Session session;
};

struct titans_sampler {
  titans::SamplerOptions options;
  std::mt19937_64 rng;
};

namespace {

using titans::Error;
using titans::ErrorCode;

// The message of the calling thread's last failed call.
thread_local std::string last_error;

void SetLastError(const char* function, const char* message) noexcept {
  try {
    last_error = std::string(function) + ": " + message;
  } catch (...) {  // no memory for the message: an empty one rather than a stale one
    last_error.clear();
  }
}

titans_status StatusOf(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument:
      return TITANS_INVALID_ARGUMENT;
    case ErrorCode::kConfig:
      return TITANS_CONFIG;
    case ErrorCode::kIo:
      return TITANS_IO;
    case ErrorCode::kFormat:
      return TITANS_FORMAT;
    case ErrorCode::kMismatch:
      return TITANS_MISMATCH;
    case ErrorCode::kNumerical:
      return TITANS_NUMERICAL;
  }
  return TITANS_INTERNAL;
}

// Runs `body`; TITANS_OK, or the status and message of what it threw.
template <class Body>
titans_status Guard(const char* function, Body&& body) noexcept {
  try {
    body();
    return TITANS_OK;
  } catch (const Error& e) {
    SetLastError(function, e.what());
    return StatusOf(e.code());
  } catch (const std::bad_alloc&) {
    SetLastError(function, "out of memory");
    return TITANS_OUT_OF_MEMORY;
  } catch (const std::exception& e) {
    SetLastError(function, e.what());
    return TITANS_INTERNAL;
  } catch (...) {
    SetLastError(function, "unknown exception");
    return TITANS_INTERNAL;
  }
}

[[noreturn]] void Invalid(const std::string& problem) {
  throw Error(ErrorCode::kInvalidArgument, problem);
}

template <class T>
T& Need(T* handle, const char* name) {
  if (handle == nullptr) Invalid(std::string(name) + " is NULL");
  return *handle;
}

// a * b, refused when it overflows size_t.
size_t Product(size_t a, size_t b, const char* what) {
  size_t product = 0;
  if (__builtin_mul_overflow(a, b, &product)) Invalid(std::string(what) + " overflows size_t");
  return product;
}

titans::SamplerOptions Options(const titans_sampler_params& params) {
  titans::SamplerOptions options;
  options.temperature = params.temperature;
  options.top_k = params.top_k;
  options.top_p = params.top_p;
  options.seed = params.seed;
  return options;
}

// Checks sampler options with SampleToken itself (the one definition of what is valid).
void CheckOptions(const titans::SamplerOptions& options) {
  const float logit = 0.0f;
  std::mt19937_64 rng(0);
  titans::SampleToken(std::span<const float>(&logit, 1), options, rng);
}

// The forward passes' common checks: tokens and output room.
void CheckArrays(const void* input, size_t n_tokens, const void* output, size_t output_size,
                 size_t width, const char* input_name, const char* output_name) {
  if (input == nullptr && n_tokens > 0) Invalid(std::string(input_name) + " is NULL");
  const size_t needed = Product(n_tokens, width, output_name);
  if (output == nullptr && needed > 0) Invalid(std::string(output_name) + " is NULL");
  if (output_size < needed) {
    Invalid(std::string(output_name) + " has room for " + std::to_string(output_size) +
            " floats, " + std::to_string(n_tokens) + " tokens need " + std::to_string(needed));
  }
}

}  // namespace

extern "C" {

const char* titans_version(void) { return TITANS_VERSION_STRING; }

int titans_c_api_version(void) { return TITANS_C_API_VERSION; }

const char* titans_status_string(titans_status status) {
  switch (status) {
    case TITANS_OK:
      return "ok";
    case TITANS_INVALID_ARGUMENT:
      return "invalid_argument";
    case TITANS_CONFIG:
      return "config";
    case TITANS_IO:
      return "io";
    case TITANS_FORMAT:
      return "format";
    case TITANS_MISMATCH:
      return "mismatch";
    case TITANS_NUMERICAL:
      return "numerical";
    case TITANS_OUT_OF_MEMORY:
      return "out_of_memory";
    case TITANS_INTERNAL:
      return "internal";
  }
  return "unknown";
}

const char* titans_last_error(void) { return last_error.c_str(); }

// ---- Models

titans_status titans_model_load(const char* path, titans_model** out) {
  return Guard(__func__, [&] {
    Need(out, "out");
    if (path == nullptr) Invalid("path is NULL");
    auto model = std::make_unique<titans_model>();
    model->model = titans::Model::Load(path);
    *out = model.release();
  });
}

void titans_model_free(titans_model* model) { delete model; }

titans_status titans_model_config_json(const titans_model* model, char* buffer, size_t buffer_size,
                                       size_t* length) {
  return Guard(__func__, [&] {
    const titans::Model& m = *Need(model, "model").model;
    Need(length, "length");
    const std::string json = m.config().ToJson();
    if (buffer == nullptr) {
      if (buffer_size != 0) Invalid("buffer is NULL but buffer_size is not 0");
    } else {
      if (buffer_size < json.size() + 1) {
        Invalid("buffer has room for " + std::to_string(buffer_size) + " chars, the config needs " +
                std::to_string(json.size() + 1) + " with its NUL");
      }
      std::memcpy(buffer, json.data(), json.size());
      buffer[json.size()] = '\0';
    }
    *length = json.size();
  });
}

titans_status titans_model_vocab_size(const titans_model* model, int32_t* vocab_size) {
  return Guard(__func__, [&] {
    const titans::Model& m = *Need(model, "model").model;
    Need(vocab_size, "vocab_size") = m.config().vocab_size;
  });
}

titans_status titans_model_d_model(const titans_model* model, int32_t* d_model) {
  return Guard(__func__, [&] {
    const titans::Model& m = *Need(model, "model").model;
    Need(d_model, "d_model") = m.config().d_model;
  });
}

titans_status titans_model_layer_count(const titans_model* model, int32_t* layers) {
  return Guard(__func__, [&] {
    const titans::Model& m = *Need(model, "model").model;
    Need(layers, "layers") = static_cast<int32_t>(m.config().layers.size());
  });
}

titans_status titans_model_weight_type(const titans_model* model, titans_weight_type* type) {
  return Guard(__func__, [&] {
    const titans::Model& m = *Need(model, "model").model;
    Need(type, "type") =
        m.weight_type() == titans::WeightType::kBf16 ? TITANS_WEIGHTS_BF16 : TITANS_WEIGHTS_F32;
  });
}

titans_status titans_model_convert(const titans_model* model, titans_weight_type type,
                                   titans_model** out) {
  return Guard(__func__, [&] {
    const titans_model& m = Need(model, "model");
    Need(out, "out");
    // A C caller may pass any int, while a C++ enum without a fixed type holds only its
    // enumerators' range (0..1): the value is read as the int it is.
    static_assert(sizeof(titans_weight_type) == sizeof(int));
    int value = 0;
    std::memcpy(&value, &type, sizeof value);
    if (value != TITANS_WEIGHTS_F32 && value != TITANS_WEIGHTS_BF16) {
      Invalid("type " + std::to_string(value) +
              " is not a titans_weight_type (TITANS_WEIGHTS_F32 = 0, TITANS_WEIGHTS_BF16 = 1)");
    }
    const titans::WeightType weight_type =
        value == TITANS_WEIGHTS_BF16 ? titans::WeightType::kBf16 : titans::WeightType::kF32;
    auto converted = std::make_unique<titans_model>();
    // The same immutable model when it already stores them so; otherwise a converted copy.
    converted->model = m.model->weight_type() == weight_type
                           ? m.model
                           : std::make_shared<const titans::Model>(m.model->config(),
                                                                   m.model->weights(), weight_type);
    *out = converted.release();
  });
}

// ---- Sessions

titans_status titans_session_new(const titans_model* model, int32_t threads, titans_session** out) {
  return Guard(__func__, [&] {
    const titans_model& m = Need(model, "model");
    Need(out, "out");
    titans::SessionOptions options;
    options.threads = threads;
    *out = new titans_session{titans::Session(m.model, options)};
  });
}

void titans_session_free(titans_session* session) { delete session; }

titans_status titans_session_clone(const titans_session* session, titans_session** out) {
  return Guard(__func__, [&] {
    const titans::Session& s = Need(session, "session").session;
    Need(out, "out");
    *out = new titans_session{s.Clone()};
  });
}

titans_status titans_session_reset(titans_session* session) {
  return Guard(__func__, [&] { Need(session, "session").session.Reset(); });
}

titans_status titans_session_position(const titans_session* session, int64_t* position) {
  return Guard(__func__, [&] {
    const titans::Session& s = Need(session, "session").session;
    Need(position, "position") = s.position();
  });
}

titans_status titans_session_forward(titans_session* session, const int32_t* tokens,
                                     size_t n_tokens, float* logits, size_t logits_size) {
  return Guard(__func__, [&] {
    titans::Session& s = Need(session, "session").session;
    const auto vocab = static_cast<size_t>(s.model().config().vocab_size);
    if (vocab == 0) {
      Invalid(
          "this model takes input embeddings (vocab_size 0): use "
          "titans_session_forward_embeddings");
    }
    CheckArrays(tokens, n_tokens, logits, logits_size, vocab, "tokens", "logits");
    s.Forward(std::span<const int32_t>(tokens, n_tokens),
              std::span<float>(logits, n_tokens * vocab));
  });
}

titans_status titans_session_forward_embeddings(titans_session* session, const float* embeddings,
                                                size_t n_tokens, float* hidden,
                                                size_t hidden_size) {
  return Guard(__func__, [&] {
    titans::Session& s = Need(session, "session").session;
    const auto d = static_cast<size_t>(s.model().config().d_model);
    CheckArrays(embeddings, n_tokens, hidden, hidden_size, d, "embeddings", "hidden");
    const size_t size = n_tokens * d;  // checked by CheckArrays
    s.ForwardEmbeddings(std::span<const float>(embeddings, size), std::span<float>(hidden, size));
  });
}

// ---- Sampling and generation

titans_sampler_params titans_sampler_default_params(void) {
  titans_sampler_params params;
  params.temperature = 0.0f;
  params.top_k = 0;
  params.top_p = 1.0f;
  params.seed = 0;
  return params;
}

titans_status titans_sampler_new(const titans_sampler_params* params, titans_sampler** out) {
  return Guard(__func__, [&] {
    const titans::SamplerOptions options = Options(Need(params, "params"));
    Need(out, "out");
    CheckOptions(options);
    *out = new titans_sampler{options, std::mt19937_64(options.seed)};
  });
}

void titans_sampler_free(titans_sampler* sampler) { delete sampler; }

titans_status titans_sampler_sample(titans_sampler* sampler, const float* logits, size_t n_logits,
                                    int32_t* token) {
  return Guard(__func__, [&] {
    titans_sampler& s = Need(sampler, "sampler");
    Need(token, "token");
    if (logits == nullptr && n_logits > 0) Invalid("logits is NULL");
    std::mt19937_64 rng = s.rng;  // advanced only when the draw succeeds
    const int32_t drawn =
        titans::SampleToken(std::span<const float>(logits, n_logits), s.options, rng);
    s.rng = rng;
    *token = drawn;
  });
}

titans_status titans_session_generate(titans_session* session, const int32_t* prompt,
                                      size_t n_prompt, int32_t max_new_tokens,
                                      const titans_sampler_params* params,
                                      titans_token_callback callback, void* user_data,
                                      int32_t* n_generated) {
  return Guard(__func__, [&] {
    titans::Session& s = Need(session, "session").session;
    if (prompt == nullptr && n_prompt > 0) Invalid("prompt is NULL");
    if (callback == nullptr) Invalid("callback is NULL");
    if (max_new_tokens < 0) Invalid("max_new_tokens must be >= 0");
    if (n_prompt == 0 && max_new_tokens > 0) {
      Invalid("generation needs a prompt of at least one token");
    }
    const titans::SamplerOptions options =
        params != nullptr ? Options(*params) : titans::SamplerOptions{};
    CheckOptions(options);
    const auto vocab = static_cast<size_t>(s.model().config().vocab_size);
    if (vocab == 0) Invalid("this model takes input embeddings (vocab_size 0): nothing to sample");
    // The loop of Session::Generate, with the callback, on a copy of the state.
    titans::Session work = s.Clone();
    std::vector<float> logits(Product(n_prompt, vocab, "the prompt's logits"));
    work.Forward(std::span<const int32_t>(prompt, n_prompt), logits);
    int32_t produced = 0;
    if (max_new_tokens > 0) {
      std::mt19937_64 rng(options.seed);
      std::span<const float> last(logits.data() + (n_prompt - 1) * vocab, vocab);
      std::vector<float> step(vocab);
      for (int32_t i = 0; i < max_new_tokens; ++i) {
        const int32_t token = titans::SampleToken(last, options, rng);
        ++produced;
        if (callback(token, user_data) != 0 || i + 1 == max_new_tokens) break;
        work.Forward(std::span<const int32_t>(&token, 1), step);
        last = step;
      }
    }
    s = std::move(work);
    if (n_generated != nullptr) *n_generated = produced;
  });
}

// ---- Session state

titans_status titans_session_save(const titans_session* session, const char* path) {
  return Guard(__func__, [&] {
    const titans::Session& s = Need(session, "session").session;
    if (path == nullptr) Invalid("path is NULL");
    s.Save(path);
  });
}

titans_status titans_session_load(titans_session* session, const char* path) {
  return Guard(__func__, [&] {
    titans::Session& s = Need(session, "session").session;
    if (path == nullptr) Invalid("path is NULL");
    s.Load(path);
  });
}

titans_status titans_session_state_size(const titans_session* session, size_t* size) {
  return Guard(__func__, [&] {
    const titans::Session& s = Need(session, "session").session;
    Need(size, "size");
    *size = s.SaveToBytes().size();
  });
}

titans_status titans_session_state_get(const titans_session* session, void* buffer,
                                       size_t buffer_size, size_t* written) {
  return Guard(__func__, [&] {
    const titans::Session& s = Need(session, "session").session;
    const std::vector<std::byte> bytes = s.SaveToBytes();
    if (buffer_size < bytes.size()) {
      Invalid("buffer has " + std::to_string(buffer_size) + " bytes, the state needs " +
              std::to_string(bytes.size()) + " (titans_session_state_size)");
    }
    if (buffer == nullptr) Invalid("buffer is NULL");
    std::memcpy(buffer, bytes.data(), bytes.size());
    if (written != nullptr) *written = bytes.size();
  });
}

titans_status titans_session_state_set(titans_session* session, const void* buffer,
                                       size_t buffer_size) {
  return Guard(__func__, [&] {
    titans::Session& s = Need(session, "session").session;
    if (buffer == nullptr && buffer_size > 0) Invalid("buffer is NULL");
    s.LoadFromBytes(std::span<const std::byte>(static_cast<const std::byte*>(buffer), buffer_size));
  });
}

// ---- Memory health

titans_status titans_session_health(const titans_session* session, titans_memory_health* health,
                                    size_t capacity, size_t* count) {
  return Guard(__func__, [&] {
    const titans::Session& s = Need(session, "session").session;
    Need(count, "count");
    if (health == nullptr && capacity > 0) Invalid("health is NULL but capacity is not 0");
    const std::vector<titans::LayerHealth> layers = s.Health();
    if (health != nullptr || capacity > 0) {
      if (capacity < layers.size()) {
        Invalid("health has room for " + std::to_string(capacity) + " entries, the session has " +
                std::to_string(layers.size()) + " memory layers");
      }
      for (size_t i = 0; i < layers.size(); ++i) {
        const titans::LayerHealth& l = layers[i];
        titans_memory_health& h = health[i];
        h.layer = l.layer;
        h.finite = l.memory.finite ? 1 : 0;
        h.all_zero = l.memory.all_zero ? 1 : 0;
        h.position = l.memory.position;
        h.weights_norm = l.memory.weights_norm;
        h.initial_norm = l.memory.initial_norm;
        h.momentum_norm = l.memory.momentum_norm;
      }
    }
    *count = layers.size();
  });
}

}  // extern "C"
