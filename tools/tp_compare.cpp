// titans_tp_compare: the engine side of tools/bench_titans_pytorch.py (docs/PERFORMANCE.md,
// "Side by side with titans-pytorch").
//
//   titans_tp_compare --memory memory.safetensors --input x.safetensors [--threads T]
//                     [--warmup W] [--repetitions R] [--output y.f32]
//   titans_tp_compare --model model.safetensors --input tokens.safetensors ...
//   titans_tp_compare --model model.safetensors --input prompt.safetensors --generate N ...
//
// --memory: a converted titans-pytorch NeuralMemory; the input file holds "x" F32 [n, d] and
// every repetition runs MemorySession::Forward over all n tokens (titans-pytorch `mem(x)`).
// --model: a converted MemoryAsContextTransformer (or any token model); the input holds
// "tokens" I32 [n] and every repetition runs Session::Forward over them (`model(tokens)`).
// Each warm-up and repetition starts a fresh session, as every titans-pytorch call without a
// state does; only Forward is timed. --generate N: the tokens are a prompt, and every
// repetition is a greedy Session::Generate of N tokens after it on a fresh session (the prompt's
// forward included, as titans-pytorch's sample() does it); tokens per second count the N.
// Prints one JSON object; --output writes the last repetition's output as raw little-endian
// float32 [n, width] (with --generate: the N token ids as int32) for the caller's diff check.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/safetensors.hpp"
#include "titans/titans.hpp"

namespace {

using Clock = std::chrono::steady_clock;

// Reads the one tensor the run needs and checks its dtype and rank, naming what is wrong.
const titans::io::TensorRecord& InputTensor(const titans::io::SafetensorsFile& file,
                                            const std::string& name, titans::io::DType dtype,
                                            size_t rank) {
  const titans::io::TensorRecord* t = file.Find(name);
  if (t == nullptr) {
    throw titans::Error(titans::ErrorCode::kMismatch, "input file has no tensor \"" + name + "\"");
  }
  if (t->dtype != dtype || t->shape.size() != rank) {
    throw titans::Error(titans::ErrorCode::kMismatch,
                        "input tensor \"" + name + "\" must be " + titans::io::ToString(dtype) +
                            " of rank " + std::to_string(rank) + ", got " +
                            titans::io::ToString(t->dtype) + " of rank " +
                            std::to_string(t->shape.size()));
  }
  return *t;
}

double Seconds(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Times the engine on a converted titans-pytorch file (tools/bench_titans_pytorch.py)"};
  std::string memory_path, model_path, input_path, output_path;
  int threads = 1, warmup = 1, repetitions = 5, generate = 0;
  auto* memory_opt = app.add_option("--memory", memory_path, "converted NeuralMemory file");
  auto* model_opt = app.add_option("--model", model_path, "converted MemoryAsContextTransformer");
  memory_opt->excludes(model_opt);
  app.add_option("--input", input_path, "safetensors: x F32 [n, d] (memory) or tokens I32 [n]")
      ->required();
  app.add_option("--threads", threads, "SessionOptions::threads")->check(CLI::PositiveNumber);
  app.add_option("--warmup", warmup, "untimed calls first")->check(CLI::NonNegativeNumber);
  app.add_option("--repetitions", repetitions, "timed calls")->check(CLI::PositiveNumber);
  app.add_option("--output", output_path, "write the last call's output (raw float32)");
  app.add_option("--generate", generate,
                 "--model: greedy-generate this many tokens after the "
                 "input tokens")
      ->check(CLI::PositiveNumber)
      ->needs(model_opt);
  CLI11_PARSE(app, argc, argv);
  if (memory_path.empty() == model_path.empty()) {
    std::fprintf(stderr, "error: give exactly one of --memory and --model\n");
    return 2;
  }

  try {
    const titans::SessionOptions options{.threads = threads};
    const auto input = titans::io::SafetensorsFile::Open(input_path);
    // Inputs and the output are allocated here, outside the timed calls.
    std::vector<float> x, out;
    std::vector<int32_t> tokens, generated;
    std::shared_ptr<const titans::NeuralMemory> memory;
    std::shared_ptr<const titans::Model> model;
    std::string kind;
    int64_t n = 0, width = 0;  // tokens; output floats per token
    // One call on a fresh session; returns the seconds of Forward alone.
    std::function<double()> timed_call;

    if (!memory_path.empty()) {
      kind = "memory";
      memory = titans::NeuralMemory::Load(memory_path);
      const auto& t = InputTensor(input, "x", titans::io::DType::kF32, 2);
      if (t.shape[1] != memory->input_width()) {
        throw titans::Error(titans::ErrorCode::kMismatch,
                            "input width " + std::to_string(t.shape[1]) + " != memory d_model " +
                                std::to_string(memory->input_width()));
      }
      n = t.shape[0];
      width = memory->output_width();
      x.resize(static_cast<size_t>(t.shape[0] * t.shape[1]));
      input.ReadF32("x", t.shape, x);
      out.resize(static_cast<size_t>(n * width));
      timed_call = [&] {
        titans::MemorySession session(memory, options);
        const auto start = Clock::now();
        session.Forward(x, out);
        return Seconds(start);
      };
    } else {
      kind = "model";
      model = titans::Model::Load(model_path);
      if (model->config().vocab_size <= 0) {
        throw titans::Error(titans::ErrorCode::kInvalidArgument,
                            model_path + " has no vocabulary: --model needs a token model");
      }
      const auto& t = InputTensor(input, "tokens", titans::io::DType::kI32, 1);
      n = t.shape[0];
      width = model->config().vocab_size;
      tokens.resize(static_cast<size_t>(n));
      std::memcpy(tokens.data(), t.bytes.data(), t.bytes.size());
      out.resize(static_cast<size_t>(n * width));
      timed_call = [&] {
        titans::Session session(model, options);
        const auto start = Clock::now();
        session.Forward(tokens, out);
        return Seconds(start);
      };
      if (generate > 0) {
        kind = "generate";
        timed_call = [&] {
          titans::Session session(model, options);
          const auto start = Clock::now();
          generated = session.Generate(tokens, generate, titans::SamplerOptions{});
          return Seconds(start);
        };
      }
    }

    if (n == 0) throw titans::Error(titans::ErrorCode::kInvalidArgument, "the input has no tokens");
    for (int i = 0; i < warmup; ++i) timed_call();
    std::vector<double> seconds;
    seconds.reserve(static_cast<size_t>(repetitions));
    for (int i = 0; i < repetitions; ++i) seconds.push_back(timed_call());

    if (!output_path.empty()) {
      std::ofstream f(output_path, std::ios::binary | std::ios::trunc);
      if (generate > 0) {
        f.write(reinterpret_cast<const char*>(generated.data()),
                static_cast<std::streamsize>(generated.size() * sizeof(int32_t)));
      } else {
        f.write(reinterpret_cast<const char*>(out.data()),
                static_cast<std::streamsize>(out.size() * sizeof(float)));
      }
      if (!f) throw titans::Error(titans::ErrorCode::kIo, "cannot write " + output_path);
    }

    const double median = Median(seconds);
    const int64_t counted = generate > 0 ? generate : n;  // the tokens a second counts
    nlohmann::json report = {{"kind", kind},
                             {"tokens", counted},
                             {"prompt_tokens", generate > 0 ? n : 0},
                             {"output_width", width},
                             {"threads", threads},
                             {"warmup", warmup},
                             {"seconds", seconds},
                             {"median_seconds", median},
                             {"tokens_per_second", static_cast<double>(counted) / median}};
    std::printf("%s\n", report.dump().c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
