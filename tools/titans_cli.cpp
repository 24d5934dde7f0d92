// titans: the command-line program (docs/CLI.md).
//
//   titans make-model OUT [--config CONFIG.json | --kind K --layers N --d-model D ...] [--seed S]
//                     [--weights f32|bf16]
//   titans convert-weights IN OUT --to f32|bf16   (the product matrices as bf16 or f32)
//   titans info FILE [--config-only]          (model, session state, memory weights or state)
//   titans generate MODEL (--prompt-tokens 1,2,3 | -p TEXT | -f FILE) [-n N] [sampler options]
//                   [--stop STR]... [--repeat-penalty P] [--stats]   (streams the output)
//   titans forward MODEL --input IN --output OUT [--split a,b,... | --every N]
//                  [--load-state F] [--save-state F] [--stats]
//   titans bench [--contexts 1K,4K,...] [--kinds lmm,mac,...] [--json F] [--plot F]
//   titans niah [--lengths 1K,4K,...] [--depths 0,50,...] [--trials N] [--baseline] [--json F]
//               [--plot F] [--model MODEL] [--haystack TEXT]
//   titans eval MODEL TEXT [--window W] [--reset-every N] [--max-bytes N] [--json F] [--plot F]
//
// Every command that makes, runs or describes a model (make-model, info, generate, forward,
// bench, niah, eval) takes --weights f32|bf16: how the model stores its product matrices for the
// run (default: as the model file stores them; make-model, bench and the constructed niah
// models: f32).
//
// `titans` alone, `titans --help` and an unknown command list the commands, one line each.
// Exit status: 0 on success, 1 when running the command fails (the library's titans::Error:
// a bad model or input file, a token out of range, ...), 2 for a malformed command line
// (`titans` alone included). Every failure prints one line `error: <message>` to stderr.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "cli_bench.hpp"
#include "cli_eval.hpp"
#include "cli_niah.hpp"
#include "cli_options.hpp"
#include "io/safetensors.hpp"
#include "titans/titans.hpp"

#ifndef TITANS_VERSION_STRING
#define TITANS_VERSION_STRING "unknown"
#endif

namespace {

using titans::BlockKind;
using titans::Error;
using titans::ErrorCode;
using titans::WeightType;
using titans::cli::AddWeightsOption;
using titans::cli::AtLeast;
using titans::cli::GreaterThan;
using titans::cli::NumberIn;
using titans::cli::RefuseCollisions;
using titans::cli::SeedValue;
using titans::cli::WithWeights;
namespace io = titans::io;

// A command failed for a reason the library does not report itself (exit status 1).
[[noreturn]] void Fail(const std::string& message) {
  throw Error(ErrorCode::kInvalidArgument, message);
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

int64_t Elements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// "1,2,3" or "1 2 3" or "1, 2, 3" -> integers; throws std::invalid_argument naming the
// problem. Spaces separate like commas, but a comma must stand between two items: "1,,2", ",1"
// and "1," are refused rather than read as "1,2" and "1".
std::vector<int64_t> ParseIntList(const std::string& text) {
  std::vector<int64_t> values;
  std::string item;
  bool comma_pending = true;  // at the start, as after a comma: an item must come next
  auto flush = [&] {
    if (item.empty()) return;
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size()) throw std::invalid_argument("\"" + item + "\" is not an integer");
    values.push_back(v);
    item.clear();
    comma_pending = false;
  };
  for (char c : text) {
    if (c == ',') {
      flush();
      if (comma_pending) throw std::invalid_argument("an empty item in \"" + text + "\"");
      comma_pending = true;
    } else if (c == ' ') {
      flush();
    } else {
      item += c;
    }
  }
  flush();
  if (values.empty()) throw std::invalid_argument("the list is empty");
  if (comma_pending) throw std::invalid_argument("an empty item in \"" + text + "\"");
  return values;
}

// CLI11 check: a comma-separated list of integers (each >= min_value).
CLI::Validator IntList(int64_t min_value, const std::string& what) {
  return CLI::Validator(
      [min_value, what](std::string& text) -> std::string {
        try {
          for (int64_t v : ParseIntList(text)) {
            if (v < min_value) {
              return what + " must be >= " + std::to_string(min_value) + ", got " +
                     std::to_string(v);
            }
          }
        } catch (const std::invalid_argument& e) {
          return "expected a comma-separated list of integers: " + std::string(e.what());
        }
        return "";
      },
      "INT,INT,...");
}

// ---------------------------------------------------------------------------------------------
// Layer kinds: one of lmm|mal|mag|mac|attention, `mixed`, or a comma-separated list.

std::vector<BlockKind> ParseKinds(const std::string& text, int layers) {
  static const std::map<std::string, BlockKind> kKinds = {{"lmm", BlockKind::kLmm},
                                                          {"mal", BlockKind::kMal},
                                                          {"mag", BlockKind::kMag},
                                                          {"mac", BlockKind::kMac},
                                                          {"attention", BlockKind::kAttention}};
  std::vector<BlockKind> kinds;
  if (text == "mixed") {
    const BlockKind cycle[] = {BlockKind::kLmm, BlockKind::kMal, BlockKind::kMag, BlockKind::kMac,
                               BlockKind::kAttention};
    for (int l = 0; l < layers; ++l) kinds.push_back(cycle[l % 5]);
    return kinds;
  }
  std::stringstream in(text);
  std::string name;
  while (std::getline(in, name, ',')) {
    const auto it = kKinds.find(name);
    if (it == kKinds.end()) {
      throw std::invalid_argument("unknown layer kind \"" + name +
                                  "\" (lmm, mal, mag, mac, attention, mixed)");
    }
    kinds.push_back(it->second);
  }
  if (kinds.empty()) throw std::invalid_argument("no layer kind given");
  if (kinds.size() == 1) kinds.assign(static_cast<size_t>(std::max(layers, 1)), kinds[0]);
  return kinds;
}

// ---------------------------------------------------------------------------------------------
// make-model

struct MakeModelArgs {
  std::string out;
  std::string config_path;
  uint64_t seed = 1;
  std::string kind = "mag";
  int layers = 2;
  bool layers_given = false;
  int d_model = 64;
  int vocab = 256;
  int ffn_hidden = 0;  // 0: 4 * d_model
  bool tied = false;
  int heads = 4;
  int kv_heads = 0;  // 0: heads
  int head_dim = 0;  // 0: d_model / heads
  int window = 64;
  int persistent = 0;
  int memory_heads = 2;
  int memory_head_dim = 0;  // 0: d_model / memory_heads
  int memory_depth = 2;
  int chunk = 16;
  int segment = 0;                    // 0: the memory's unit (chunk)
  std::optional<WeightType> weights;  // nullopt: f32
};

titans::ModelConfig ConfigFromFlags(const MakeModelArgs& a) {
  titans::ModelConfig c;
  c.vocab_size = a.vocab;
  c.d_model = a.d_model;
  c.ffn_hidden = a.ffn_hidden > 0 ? a.ffn_hidden : 4 * a.d_model;
  c.tie_embeddings = a.vocab > 0 && a.tied;
  c.layers = ParseKinds(a.kind, a.kind == "mixed" && !a.layers_given ? 5 : a.layers);
  if (a.layers_given && static_cast<int>(c.layers.size()) != a.layers) {
    Fail("--kind " + a.kind + " names " + std::to_string(c.layers.size()) +
         " layers but --layers is " + std::to_string(a.layers));
  }
  c.attention.heads = a.heads;
  c.attention.kv_heads = a.kv_heads > 0 ? a.kv_heads : a.heads;
  c.attention.head_dim = a.head_dim > 0 ? a.head_dim : std::max(1, a.d_model / a.heads);
  c.attention.window = a.window;
  c.attention.persistent = a.persistent;
  const int memory_head_dim =
      a.memory_head_dim > 0 ? a.memory_head_dim : std::max(1, a.d_model / a.memory_heads);
  c.memory = titans::MemoryConfig::Paper(a.d_model, a.memory_heads, memory_head_dim, a.memory_depth,
                                         a.chunk);
  c.memory.output_proj = false;
  const bool any_mac =
      std::find(c.layers.begin(), c.layers.end(), BlockKind::kMac) != c.layers.end();
  if (any_mac) c.segment = a.segment > 0 ? a.segment : c.memory.unit();
  c.Validate();
  return c;
}

std::string ReadTextFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorCode::kIo, path + ": cannot open");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw Error(ErrorCode::kIo, path + ": cannot read");
  return text.str();
}

std::string KindList(const titans::ModelConfig& c) {
  std::string s;
  for (size_t l = 0; l < c.layers.size(); ++l)
    s += (l ? "," : "") + std::string(ToString(c.layers[l]));
  return s;
}

int64_t ParameterCount(const titans::Model& model) {
  int64_t n = 0;
  for (const auto& t : model.weights().Tensors(model.config())) n += t.size();
  return n;
}

int RunMakeModel(const MakeModelArgs& a) {
  titans::ModelConfig config;
  if (!a.config_path.empty()) {
    try {
      config = titans::ModelConfig::FromJson(ReadTextFile(a.config_path));
    } catch (const Error& e) {
      throw std::runtime_error(a.config_path + ": " + e.what());
    }
  } else {
    config = ConfigFromFlags(a);
  }
  titans::ModelWeights weights = titans::ModelWeights::Random(config, a.seed);
  const titans::Model model(config, std::move(weights), a.weights.value_or(WeightType::kF32));
  model.Save(a.out);
  std::cout << "wrote " << a.out << ": " << config.layers.size() << " layers (" << KindList(config)
            << "), d_model " << config.d_model << ", vocab " << config.vocab_size << ", "
            << ParameterCount(model) << " parameters, seed " << a.seed;
  if (model.weight_type() == WeightType::kBf16) std::cout << ", bf16 weights";
  std::cout << "\n";
  return 0;
}

// ---------------------------------------------------------------------------------------------
// convert-weights

int RunConvertWeights(const std::string& in, const std::string& out, WeightType to) {
  std::shared_ptr<const titans::Model> model = titans::Model::Load(in);
  const WeightType from = model->weight_type();
  const auto in_bytes = std::filesystem::file_size(in);
  model = WithWeights(std::move(model), to);  // the loaded model is freed once converted
  model->Save(out);
  std::cout << "wrote " << out << ": " << ToString(to) << " weights, "
            << std::filesystem::file_size(out) << " bytes (from " << in << ": " << ToString(from)
            << " weights, " << in_bytes << " bytes)\n";
  return 0;
}

// ---------------------------------------------------------------------------------------------
// info: every file the engine writes, by the `format` in its metadata

std::string PrettyJson(const std::string& json) {
  return nlohmann::ordered_json::parse(json).dump(2);
}

std::string PrettyConfig(const titans::ModelConfig& config) { return PrettyJson(config.ToJson()); }

// The value of a [1] I64 tensor (the file was checked by the library's Load before).
int64_t ScalarI64(const io::SafetensorsFile& file, const std::string& name) {
  const io::TensorRecord* t = file.Find(name);
  int64_t value = 0;
  if (t != nullptr && t->dtype == io::DType::kI64 && t->bytes.size() == sizeof value) {
    std::memcpy(&value, t->bytes.data(), sizeof value);
  }
  return value;
}

// Values and bytes of the tensors whose names start with `prefix`.
struct TensorTotals {
  int64_t tensors = 0, values = 0, bytes = 0;
};
TensorTotals Totals(const io::SafetensorsFile& file, const std::string& prefix = "") {
  TensorTotals totals;
  for (const io::TensorRecord& t : file.tensors()) {
    if (t.name.rfind(prefix, 0) != 0) continue;
    ++totals.tensors;
    totals.values += Elements(t.shape);
    totals.bytes += static_cast<int64_t>(t.bytes.size());
  }
  return totals;
}

// The tensors in file order with name, dtype, shape and number of values, then the totals
// ("parameters" for weights, "values" for states).
void PrintTensorTable(const io::SafetensorsFile& file, const char* values_word) {
  std::vector<const io::TensorRecord*> table;
  for (const io::TensorRecord& t : file.tensors()) table.push_back(&t);
  std::stable_sort(table.begin(), table.end(), [](const auto* a, const auto* b) {
    return a->bytes.data() < b->bytes.data();  // file order
  });
  size_t name_width = 4, shape_width = 5;
  for (const auto* t : table) {
    name_width = std::max(name_width, t->name.size());
    shape_width = std::max(shape_width, ShapeString(t->shape).size());
  }
  const auto pad = [](std::string s, size_t width) {
    s.resize(std::max(s.size(), width), ' ');
    return s;
  };
  std::cout << "tensors: " << table.size() << "\n"
            << pad("name", name_width) << "  dtype  " << pad("shape", shape_width) << "  values\n";
  for (const auto* t : table) {
    std::cout << pad(t->name, name_width) << "  " << pad(io::ToString(t->dtype), 5) << "  "
              << pad(ShapeString(t->shape), shape_width) << "  " << Elements(t->shape) << "\n";
  }
  const TensorTotals totals = Totals(file);
  std::cout << "total: " << totals.values << " " << values_word << ", " << totals.bytes
            << " bytes of tensor data\n";
}

// A config stored in a file's metadata, parsed (and validated) with Config::FromJson.
template <class Config>
Config ConfigOf(const std::string& path, const std::map<std::string, std::string>& metadata) {
  const auto it = metadata.find("config");
  if (it == metadata.end()) {
    throw Error(ErrorCode::kFormat, path + ": no \"config\" in the metadata");
  }
  try {
    return Config::FromJson(it->second);
  } catch (const Error& e) {
    throw Error(ErrorCode::kFormat, path + ": bad config in the metadata: " + e.what());
  }
}

// Bytes of the tensors of a weight table as a model of `type` stores them in its file, from their
// shapes alone: 2 per value of a product matrix (IsBf16Candidate) of a kBf16 model, 4 per other.
double TableBytes(const std::vector<titans::ConstTensorView>& table, WeightType type) {
  double bytes = 0;
  for (const titans::ConstTensorView& t : table) {
    double n = type == WeightType::kBf16 && titans::IsBf16Candidate(t.name) ? 2 : sizeof(float);
    for (int64_t d : t.shape) n *= static_cast<double>(d);
    bytes += n;
  }
  return bytes;
}

// Bytes of the weights of `config` (ModelWeights::Zeros, the f32 model a state file is checked
// with), from the tensor table of empty weights: nothing is allocated in proportion to them.
double WeightBytes(const titans::ModelConfig& config) {
  titans::ModelWeights skeleton;
  const auto tensors = static_cast<size_t>(config.memory.model_tensors());
  if (config.architecture == titans::Architecture::kTitansPytorchMac) {
    skeleton.tp_mac.layers.resize(config.layers.size());
    for (titans::TpMacLayerWeights& l : skeleton.tp_mac.layers) l.memory.mlp.resize(tensors);
  } else {
    skeleton.layers.resize(config.layers.size());
    for (titans::LayerWeights& l : skeleton.layers) l.memory.memory.mlp.resize(tensors);
  }
  return TableBytes(std::as_const(skeleton).Tensors(config), WeightType::kF32);
}
double WeightBytes(const titans::MemoryConfig& config) {
  titans::MemoryWeights skeleton;
  skeleton.mlp.resize(static_cast<size_t>(config.model_tensors()));
  return TableBytes(std::as_const(skeleton).Tensors(config), WeightType::kF32);
}

// "bf16 (product matrices), 0.50 MiB": how `model` stores its weights and their bytes in its file.
std::string WeightsSummary(const titans::Model& model) {
  const WeightType type = model.weight_type();
  char mib[32];
  std::snprintf(mib, sizeof mib, "%.2f MiB",
                TableBytes(model.weights().Tensors(model.config()), type) / (1 << 20));
  return std::string(ToString(type)) + (type == WeightType::kBf16 ? " (product matrices)" : "") +
         ", " + mib;
}

// A state file is checked by loading it into a session of a model (or memory) of its config
// with zero weights, which are not in the file: refuse a config whose weights would take more
// than half of the available memory (a small file must not make `info` allocate without bound).
void CheckAffordable(const std::string& path, double bytes) {
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  double kib = 0;
  while (meminfo >> key >> kib) {
    if (key == "MemAvailable:") break;
    meminfo.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
    kib = 0;
  }
  if (key == "MemAvailable:" && bytes > kib * 1024 / 2) {
    Fail(path + ": checking this state needs the weights of its config in memory, " +
         std::to_string(static_cast<int64_t>(bytes / (1 << 20))) +
         " MiB, more than half of the available memory");
  }
}

std::string MemorySummary(const titans::MemoryConfig& m) {
  const std::string model = m.model == titans::MemoryModel::kMlp
                                ? "MLP depth "
                                : std::string(titans::ToString(m.model)) + " model, depth ";
  return std::to_string(m.heads) + " heads x " + std::to_string(m.head_dim) + ", " + model +
         std::to_string(m.depth) + ", unit " + std::to_string(m.unit()) + " tokens";
}

// `weights`: --weights, what the model would be for a run (nullopt: as the file stores it).
int RunInfo(const std::string& path, bool config_only, std::optional<WeightType> weights) {
  const io::SafetensorsFile file = io::SafetensorsFile::Open(path);
  const auto meta = [&](const char* key) {
    const auto it = file.metadata().find(key);
    return it == file.metadata().end() ? std::string() : it->second;
  };
  const std::string format = meta("format");
  const auto header = [&](const char* what) {
    std::cout << "file: " << path << " (" << std::filesystem::file_size(path) << " bytes)\n"
              << "format: " << format << " version " << meta("format_version") << " (" << what
              << ")\n";
  };

  if (format == "titans.model") {
    const std::shared_ptr<const titans::Model> model = titans::Model::Load(path);  // checks all
    if (config_only) {
      std::cout << PrettyConfig(model->config()) << "\n";
      return 0;
    }
    header("a model: Model::Save, titans make-model");
    std::cout << "layers: " << KindList(model->config()) << "\n"
              << "weights: " << WeightsSummary(*model) << "\n";
    if (weights && *weights != model->weight_type()) {
      std::cout << "with --weights " << ToString(*weights) << ": "
                << WeightsSummary(*WithWeights(model, weights)) << "\n";
    }
    std::cout << "config:\n" << PrettyConfig(model->config()) << "\n";
    PrintTensorTable(file, "parameters");
    return 0;
  }
  if (weights) {
    Fail(path + ": --weights is for model files, this is not one (format \"" + format + "\")");
  }

  if (format == "titans.session") {
    // Checked by loading it into a session of a model of its config (weights play no part).
    const titans::ModelConfig config = ConfigOf<titans::ModelConfig>(path, file.metadata());
    CheckAffordable(path, WeightBytes(config));
    auto model = std::make_shared<const titans::Model>(config, titans::ModelWeights::Zeros(config));
    titans::Session session(model, titans::SessionOptions{1});
    session.Load(path);
    if (config_only) {
      std::cout << PrettyConfig(config) << "\n";
      return 0;
    }
    header("the state of one stream through a model: Session::Save, titans forward --save-state");
    std::cout << "position: " << session.position() << " tokens\n"
              << "layers: " << KindList(config) << "\n";
    for (size_t l = 0; l < config.layers.size(); ++l) {
      const std::string prefix = "layers." + std::to_string(l) + ".";
      std::cout << "layer " << l << " (" << ToString(config.layers[l]) << "):";
      const char* separator = " ";
      if (file.Find(prefix + "memory.position") != nullptr) {
        const TensorTotals m = Totals(file, prefix + "memory.");
        std::cout << separator << "memory state " << m.values << " values (" << m.bytes
                  << " bytes), position " << ScalarI64(file, prefix + "memory.position") << ", "
                  << ScalarI64(file, prefix + "memory.pending") << " tokens pending";
        separator = "; ";
      }
      const io::TensorRecord* keys = file.Find(prefix + "attention.keys");
      const io::TensorRecord* values = file.Find(prefix + "attention.values");
      if (keys != nullptr && values != nullptr && keys->shape.size() == 2) {
        std::cout << separator << "attention cache " << keys->shape[0] << " rows of "
                  << keys->shape[1] << " keys and values ("
                  << keys->bytes.size() + values->bytes.size() << " bytes), position "
                  << ScalarI64(file, prefix + "attention.position");
      }
      std::cout << "\n";
    }
    std::cout << "config:\n" << PrettyConfig(config) << "\n";
    PrintTensorTable(file, "values");
    return 0;
  }

  if (format == "titans.memory") {
    const std::shared_ptr<const titans::NeuralMemory> memory = titans::NeuralMemory::Load(path);
    if (config_only) {
      std::cout << PrettyJson(memory->config().ToJson()) << "\n";
      return 0;
    }
    header("the learned weights of one memory: NeuralMemory::Save");
    std::cout << "memory: " << MemorySummary(memory->config()) << "\n"
              << "config:\n"
              << PrettyJson(memory->config().ToJson()) << "\n";
    PrintTensorTable(file, "parameters");
    return 0;
  }

  if (format == "titans.memory_state") {
    const titans::MemoryConfig config = ConfigOf<titans::MemoryConfig>(path, file.metadata());
    CheckAffordable(path, WeightBytes(config));
    titans::MemorySession session(
        std::make_shared<const titans::NeuralMemory>(config, titans::MemoryWeights::Zeros(config)),
        titans::SessionOptions{1});
    session.Load(path);  // checks all
    if (config_only) {
      std::cout << PrettyJson(config.ToJson()) << "\n";
      return 0;
    }
    header("the state of one stream through a memory: MemorySession::Save");
    std::cout << "position: " << session.position() << " tokens, " << session.state().pending
              << " of them pending (not yet written; unit " << config.unit() << ")\n"
              << "memory: " << MemorySummary(config) << "\n"
              << "config:\n"
              << PrettyJson(config.ToJson()) << "\n";
    PrintTensorTable(file, "values");
    return 0;
  }

  if (format == "titans.forward") {
    if (config_only) Fail(path + ": a titans forward output holds no config");
    header("the outputs of titans forward");
    for (const char* key : {"input", "pieces", "split", "every", "start_position"}) {
      if (const std::string value = meta(key); !value.empty()) {
        std::cout << key << ": " << value << "\n";
      }
    }
    PrintTensorTable(file, "values");
    return 0;
  }

  throw Error(ErrorCode::kFormat,
              path + ": not a file the engine writes: " +
                  (format.empty() ? std::string("no \"format\" in the metadata")
                                  : "format \"" + format + "\"") +
                  " (known: titans.model, titans.session, titans.memory, titans.memory_state, "
                  "titans.forward)");
}

// ---------------------------------------------------------------------------------------------
// --stats: the health of every memory layer (Session::Health), one line each, to stderr.

void PrintMemoryHealth(const titans::Session& session) {
  const titans::ModelConfig& c = session.model().config();
  for (const titans::LayerHealth& l : session.Health()) {
    const titans::MemoryHealth& h = l.memory;
    std::fprintf(
        stderr, "memory: layer %d (%s) at position %lld: |W| %.4g (W0 %.4g), |momentum| %.4g, %s\n",
        l.layer, titans::ToString(c.layers[static_cast<size_t>(l.layer)]),
        static_cast<long long>(h.position), h.weights_norm, h.initial_norm, h.momentum_norm,
        !h.finite    ? "NOT FINITE (NaN or Inf)"
        : h.all_zero ? "ALL ZERO (it reads nothing)"
                     : "finite");
  }
}

// ---------------------------------------------------------------------------------------------
// generate

struct GenerateArgs {
  std::string model;                        // as MODEL or -m
  std::string prompt_tokens, prompt, file;  // exactly one of them
  bool has_prompt_tokens = false, has_prompt = false, has_file = false;
  int n = 32;
  float temperature = 0.0f;
  int top_k = 0;
  float top_p = 1.0f;
  uint64_t seed = 0;
  int threads = 0;
  float repeat_penalty = 1.0f;
  int repeat_last_n = 64;
  std::vector<std::string> stop;
  bool raw = false;
  bool stats = false;
  std::optional<WeightType> weights;  // nullopt: as the file stores them
};

// The whole of standard input or of a file, as bytes.
std::string ReadAll(std::FILE* in, const std::string& name) {
  std::string text;
  char buffer[1 << 16];
  size_t got = 0;
  while ((got = std::fread(buffer, 1, sizeof buffer, in)) > 0) text.append(buffer, got);
  if (std::ferror(in)) throw Error(ErrorCode::kIo, name + ": cannot read");
  return text;
}

// The prompt text of --prompt TEXT, --prompt - or -f FILE (- = standard input).
std::string PromptText(const GenerateArgs& a) {
  const std::string source = a.has_file ? a.file : a.prompt;
  if (!a.has_file && source != "-") return a.prompt;
  if (source == "-") return ReadAll(stdin, "standard input");
  if (std::filesystem::is_directory(source)) Fail(source + ": is a directory");
  return ReadTextFile(source);
}

// Writes the continuation of a byte-level model as it is made, flushing after every write: a
// byte as soon as it completes a UTF-8 character (or cannot be part of one). Unless raw,
// printable ASCII, newline, tab and valid UTF-8 characters are written as they are, a
// backslash as "\\", every other byte as "\xHH".
class ByteStream {
 public:
  explicit ByteStream(bool raw) : raw_(raw) {}

  void Put(unsigned char b) {
    std::string out;
    if (!pending_.empty()) {
      const bool second = pending_.size() == 1;
      const unsigned u = b;
      if (u >= (second ? lo_ : 0x80u) && u <= (second ? hi_ : 0xBFu)) {
        pending_ += static_cast<char>(b);
        if (pending_.size() == length_) {
          Write(pending_);
          pending_.clear();
        }
        return;
      }
      out = Invalid();  // not a character: its bytes one by one; then b on its own
    }
    if (b < 0x80) {
      out += Ascii(b);
    } else if (StartsCharacter(b)) {
      pending_ = std::string(1, static_cast<char>(b));
    } else {
      out += Byte(b);
    }
    if (!out.empty()) Write(out);
  }

  // At the end: the bytes of an unfinished character.
  void Finish() {
    if (!pending_.empty()) Write(Invalid());
  }

 private:
  bool StartsCharacter(unsigned char b) {
    lo_ = 0x80;
    hi_ = 0xBF;  // the allowed range of the second byte
    if (b >= 0xC2 && b <= 0xDF) {
      length_ = 2;
    } else if (b >= 0xE0 && b <= 0xEF) {
      length_ = 3;
      if (b == 0xE0) lo_ = 0xA0;  // no overlong forms
      if (b == 0xED) hi_ = 0x9F;  // no surrogates
    } else if (b >= 0xF0 && b <= 0xF4) {
      length_ = 4;
      if (b == 0xF0) lo_ = 0x90;
      if (b == 0xF4) hi_ = 0x8F;  // <= U+10FFFF
    } else {
      return false;
    }
    return true;
  }
  std::string Ascii(unsigned char b) const {
    if (raw_ || (b >= 0x20 && b < 0x7F && b != '\\') || b == '\n' || b == '\t') {
      return std::string(1, static_cast<char>(b));
    }
    return b == '\\' ? "\\\\" : Byte(b);
  }
  std::string Byte(unsigned char b) const {
    if (raw_) return std::string(1, static_cast<char>(b));
    char hex[8];
    std::snprintf(hex, sizeof hex, "\\x%02x", static_cast<unsigned>(b));
    return hex;
  }
  std::string Invalid() {
    std::string out;
    for (char c : pending_) out += Byte(static_cast<unsigned char>(c));
    pending_.clear();
    return out;
  }
  static void Write(const std::string& s) {
    std::fwrite(s.data(), 1, s.size(), stdout);
    std::fflush(stdout);
  }

  bool raw_;
  std::string pending_;  // the first bytes of a character
  size_t length_ = 0;
  unsigned lo_ = 0x80, hi_ = 0xBF;
};

// int64 token ids -> int32, naming the first one that does not fit the vocabulary.
std::vector<int32_t> ToTokens(const std::vector<int64_t>& ids, int vocab) {
  std::vector<int32_t> tokens;
  tokens.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab) {
      Fail("token " + std::to_string(ids[i]) + " at index " + std::to_string(i) +
           " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
    }
    tokens.push_back(static_cast<int32_t>(ids[i]));
  }
  return tokens;
}

// The repetition penalty of llama.cpp: the logit of every token among the last N tokens (prompt
// included) is divided by the penalty when positive and multiplied by it otherwise.
class RepeatPenalty {
 public:
  RepeatPenalty(float penalty, int last_n, int vocab)
      : penalty_(penalty), last_n_(last_n), counts_(penalty != 1.0f && last_n != 0 ? vocab : 0) {}
  bool active() const { return !counts_.empty(); }
  void Add(int32_t token) {
    if (!active()) return;
    history_.push_back(token);
    ++counts_[static_cast<size_t>(token)];
    if (last_n_ > 0 && history_.size() > static_cast<size_t>(last_n_)) {
      --counts_[static_cast<size_t>(history_.front())];
      history_.pop_front();
    }
  }
  void Apply(std::span<float> logits) const {
    for (size_t t = 0; t < counts_.size(); ++t) {
      if (counts_[t] == 0) continue;
      logits[t] = logits[t] <= 0 ? logits[t] * penalty_ : logits[t] / penalty_;
    }
  }

 private:
  float penalty_;
  int last_n_;  // -1: every token
  std::vector<int> counts_;
  std::deque<int32_t> history_;
};

double Seconds(std::chrono::steady_clock::time_point from,
               std::chrono::steady_clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

int RunGenerate(const GenerateArgs& a) {
  using Clock = std::chrono::steady_clock;
  const auto load_start = Clock::now();
  const std::shared_ptr<const titans::Model> model =
      WithWeights(titans::Model::Load(a.model), a.weights);
  const int vocab = model->config().vocab_size;
  if (vocab == 0) {
    Fail(a.model +
         ": this model takes input embeddings (vocab_size 0) and cannot generate "
         "tokens; use `titans forward` with an `embeddings` input");
  }
  const bool text = !a.has_prompt_tokens;
  std::vector<int32_t> prompt;
  if (text) {
    const char* option = a.has_file ? "--file" : "--prompt";
    if (vocab != 256) {
      Fail(std::string(option) + " needs a byte-level model (vocab_size 256), " + a.model +
           " has vocab_size " + std::to_string(vocab) + "; use --prompt-tokens");
    }
    const std::string prompt_text = PromptText(a);
    if (prompt_text.empty()) {
      Fail(std::string("the prompt is empty (") + option + " " +
           (a.has_file        ? a.file
            : a.prompt == "-" ? "-: standard input"
                              : "\"\"") +
           ")");
    }
    for (unsigned char c : prompt_text) prompt.push_back(c);
  } else {
    prompt = ToTokens(ParseIntList(a.prompt_tokens), vocab);
  }
  titans::SamplerOptions sampler;
  sampler.temperature = a.temperature;
  sampler.top_k = a.top_k;
  sampler.top_p = a.top_p;
  sampler.seed = a.seed;
  titans::Session session(model, titans::SessionOptions{a.threads});
  RepeatPenalty penalty(a.repeat_penalty, a.repeat_last_n, vocab);
  for (int32_t t : prompt) penalty.Add(t);

  // The prompt, in pieces of at most kPromptPiece tokens (one piece, as Session::Generate
  // feeds it, up to that length); the logits of its last token start the generation.
  constexpr size_t kPromptPiece = 4096;
  const auto start = Clock::now();
  std::vector<float> logits;
  for (size_t at = 0; at < prompt.size(); at += kPromptPiece) {
    const size_t n = std::min(kPromptPiece, prompt.size() - at);
    logits.resize(n * static_cast<size_t>(vocab));
    session.Forward(std::span<const int32_t>(prompt.data() + at, n), logits);
  }
  const auto prompt_done = Clock::now();
  std::vector<float> last(static_cast<size_t>(vocab));
  if (!logits.empty()) {
    std::copy(logits.end() - vocab, logits.end(), last.begin());
  }

  // One token at a time: sample, write, feed back (the last one is not fed), as
  // Session::Generate does, with the output streamed and the stop strings checked as it goes.
  ByteStream bytes(a.raw);
  size_t longest_stop = 0;
  for (const std::string& s : a.stop) longest_stop = std::max(longest_stop, s.size());
  std::string tail;  // the last bytes written, for the stop strings
  const std::string* stopped_by = nullptr;
  std::mt19937_64 rng(sampler.seed);
  Clock::time_point first_token = prompt_done;
  int made = 0;
  for (; made < a.n; ++made) {
    if (penalty.active()) penalty.Apply(last);
    const int32_t token = titans::SampleToken(last, sampler, rng);
    if (made == 0) first_token = Clock::now();
    penalty.Add(token);
    if (text) {
      bytes.Put(static_cast<unsigned char>(token));
      if (longest_stop > 0) {
        tail += static_cast<char>(token);
        if (tail.size() > longest_stop) tail.erase(0, tail.size() - longest_stop);
        for (const std::string& s : a.stop) {
          if (tail.ends_with(s)) stopped_by = &s;
        }
      }
    } else {
      std::printf("%s%d", made == 0 ? "" : ",", static_cast<int>(token));
      std::fflush(stdout);
    }
    if (stopped_by != nullptr || made + 1 == a.n) {
      ++made;
      break;
    }
    session.Forward(std::span<const int32_t>(&token, 1), last);
  }
  if (text) bytes.Finish();
  if (!text || !a.raw) std::fputs("\n", stdout);
  std::fflush(stdout);
  const auto end = Clock::now();

  if (a.stats) {
    const double prompt_s = Seconds(start, prompt_done), new_s = Seconds(prompt_done, end);
    std::fprintf(stderr, "load: %s (%s weights) in %.3f s\n", a.model.c_str(),
                 ToString(model->weight_type()), Seconds(load_start, start));
    std::fprintf(stderr, "prompt: %zu tokens in %.3f s (%.1f tokens/s)\n", prompt.size(), prompt_s,
                 static_cast<double>(prompt.size()) / std::max(prompt_s, 1e-9));
    std::fprintf(stderr, "generation: %d tokens in %.3f s (%.1f tokens/s)", made, new_s,
                 static_cast<double>(made) / std::max(new_s, 1e-9));
    if (made > 0) {
      std::fprintf(stderr, ", the first %.3f s after the prompt",
                   Seconds(prompt_done, first_token));
    }
    if (stopped_by != nullptr) {
      std::fprintf(stderr, "; stopped by --stop \"%s\"", stopped_by->c_str());
    }
    std::fprintf(stderr, "\n");
    PrintMemoryHealth(session);
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// forward

struct ForwardArgs {
  std::string model, input, output;
  std::string split;
  int64_t every = 0;
  int threads = 0;
  std::string load_state, save_state;
  bool stats = false;
  std::optional<WeightType> weights;  // nullopt: as the file stores them
};

// The piece sizes to feed T tokens in: --split sizes then the remainder, --every N, or [T].
std::vector<int64_t> Pieces(const ForwardArgs& a, int64_t total) {
  std::vector<int64_t> pieces;
  if (!a.split.empty()) {
    pieces = ParseIntList(a.split);
    int64_t sum = 0;
    for (int64_t p : pieces) {
      if (p > total - sum) {
        Fail("--split sizes " + a.split + " add up to more than the " + std::to_string(total) +
             " tokens of the input");
      }
      sum += p;
    }
    if (sum < total) pieces.push_back(total - sum);
  } else if (a.every > 0) {
    for (int64_t at = 0; at < total; at += pieces.back()) {
      pieces.push_back(std::min(a.every, total - at));
    }
  } else if (total > 0) {
    pieces.push_back(total);
  }
  return pieces;
}

std::string JoinInts(const std::vector<int64_t>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s;
}

int RunForward(const ForwardArgs& a) {
  const std::shared_ptr<const titans::Model> model =
      WithWeights(titans::Model::Load(a.model), a.weights);
  const titans::ModelConfig& config = model->config();
  const int64_t d = config.d_model, vocab = config.vocab_size;

  const io::SafetensorsFile in = io::SafetensorsFile::Open(a.input);
  const io::TensorRecord* tokens_record = in.Find("tokens");
  const io::TensorRecord* embeddings_record = in.Find("embeddings");
  const auto fail = [&](const std::string& problem) { Fail(a.input + ": " + problem); };
  if (tokens_record && embeddings_record) {
    fail("holds both \"tokens\" and \"embeddings\"; give one of them");
  }
  if (!tokens_record && !embeddings_record) {
    std::string names;
    for (const auto& t : in.tensors()) names += (names.empty() ? "" : ", ") + t.name;
    fail("holds neither \"tokens\" nor \"embeddings\" (it has: " +
         (names.empty() ? std::string("no tensors") : names) + ")");
  }

  std::vector<int32_t> tokens;
  std::vector<float> embeddings;
  int64_t total = 0;
  if (tokens_record) {
    const io::TensorRecord& t = *tokens_record;
    if (t.dtype != io::DType::kI32 && t.dtype != io::DType::kI64) {
      fail("\"tokens\" is " + std::string(io::ToString(t.dtype)) + ", expected I32 or I64");
    }
    if (t.shape.size() != 1) {
      fail("\"tokens\" has shape " + ShapeString(t.shape) + ", expected [T]");
    }
    if (vocab == 0) {
      fail("holds \"tokens\" but " + a.model +
           " takes input embeddings (vocab_size 0); give \"embeddings\" [T, " + std::to_string(d) +
           "]");
    }
    total = t.shape[0];
    std::vector<int64_t> ids(static_cast<size_t>(total));
    for (int64_t i = 0; i < total; ++i) {
      if (t.dtype == io::DType::kI32) {
        int32_t v;
        std::memcpy(&v, t.bytes.data() + i * 4, 4);
        ids[static_cast<size_t>(i)] = v;
      } else {
        std::memcpy(&ids[static_cast<size_t>(i)], t.bytes.data() + i * 8, 8);
      }
    }
    tokens = ToTokens(ids, static_cast<int>(vocab));
  } else {
    const io::TensorRecord& t = *embeddings_record;
    if (t.dtype != io::DType::kF32) {
      fail("\"embeddings\" is " + std::string(io::ToString(t.dtype)) + ", expected F32");
    }
    if (t.shape.size() != 2 || t.shape[1] != d) {
      fail("\"embeddings\" has shape " + ShapeString(t.shape) + ", expected [T, " +
           std::to_string(d) + "] (d_model " + std::to_string(d) + ")");
    }
    total = t.shape[0];
    embeddings.resize(static_cast<size_t>(total * d));
    if (!embeddings.empty()) std::memcpy(embeddings.data(), t.bytes.data(), t.bytes.size());
  }

  const std::vector<int64_t> pieces = Pieces(a, total);
  const int64_t width = tokens_record ? vocab : d;
  std::vector<float> out(static_cast<size_t>(total * width));
  titans::Session session(model, titans::SessionOptions{a.threads});
  if (!a.load_state.empty()) session.Load(a.load_state);
  const int64_t start_position = session.position();
  int64_t at = 0;
  for (int64_t n : pieces) {
    const std::span<float> piece_out(out.data() + at * width, static_cast<size_t>(n * width));
    if (tokens_record) {
      session.Forward(std::span<const int32_t>(tokens.data() + at, static_cast<size_t>(n)),
                      piece_out);
    } else {
      session.ForwardEmbeddings(
          std::span<const float>(embeddings.data() + at * d, static_cast<size_t>(n * d)),
          piece_out);
    }
    at += n;
  }

  const std::string name = tokens_record ? "logits" : "hidden";
  std::map<std::string, std::string> metadata = {
      {"format", "titans.forward"},
      {"format_version", "1"},
      {"input", tokens_record ? "tokens" : "embeddings"},
      {"pieces", std::to_string(pieces.size())},
      {"start_position", std::to_string(start_position)}};
  if (!a.split.empty()) metadata["split"] = JoinInts(pieces);
  if (a.every > 0) metadata["every"] = std::to_string(a.every);
  // Both outputs are written in full before either replaces its target (docs/CLI.md).
  io::OutputSet outputs;
  io::WriteSafetensors(outputs.Stage(a.output), metadata,
                       {{name, io::DType::kF32, {total, width}, out.data()}});
  if (!a.save_state.empty()) session.Save(outputs.Stage(a.save_state));
  outputs.Commit();
  std::cout << "wrote " << a.output << ": " << name << " " << ShapeString({total, width})
            << " from " << (tokens_record ? "tokens" : "embeddings") << " in " << pieces.size()
            << (pieces.size() == 1 ? " piece" : " pieces");
  if (!a.split.empty()) std::cout << " (" << JoinInts(pieces) << ")";
  if (a.every > 0) std::cout << " of " << a.every;
  std::cout << ", positions " << start_position << ".." << session.position() << "\n";
  if (a.stats) PrintMemoryHealth(session);
  if (!a.save_state.empty()) {
    std::cout << "wrote " << a.save_state << ": session state at position " << session.position()
              << "\n";
  }
  return 0;
}

// The list `titans`, `titans --help` and an unknown command print: every command with one line.
std::string Overview(CLI::App& app) {
  static const std::map<std::string, std::string> kSummaries = {
      {"make-model", "write a model file with seeded random weights"},
      {"convert-weights", "rewrite a model file with its product matrices as bf16 or f32"},
      {"info", "check a file of the engine and show what it holds (model, state, memory)"},
      {"generate", "continue a prompt, writing the text out as it is made"},
      {"forward", "run a model over an input file and write its logits or hidden states"},
      {"bench", "prefill cost and peak memory against the context length"},
      {"niah", "needle in a haystack: recall of a number from far back in the context"},
      {"eval", "bits per byte by position, with the memory's writes on, off and reset"}};
  std::ostringstream out;
  out << "titans " TITANS_VERSION_STRING
         ": run Titans models (transformers with a neural long-term memory)\n\n"
      << "Usage: titans COMMAND [ARGS...]\n"
      << "       titans COMMAND --help   the arguments and options of a command\n"
      << "       titans --version\n\n"
      << "Commands:\n";
  const auto subcommands = app.get_subcommands([](CLI::App* s) { return !s->get_name().empty(); });
  size_t width = 0;  // of the longest name: the summaries in one column
  for (const CLI::App* sub : subcommands) width = std::max(width, sub->get_name().size());
  for (const CLI::App* sub : subcommands) {
    const auto it = kSummaries.find(sub->get_name());
    std::string name = sub->get_name();
    name.resize(width, ' ');
    out << "  " << name << "  " << (it != kSummaries.end() ? it->second : sub->get_description())
        << "\n";
  }
  out << "\ndocs/CLI.md documents every command.\n";
  return out.str();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"titans " TITANS_VERSION_STRING
               ": run Titans models (neural long-term memory transformers). See docs/CLI.md.",
               "titans"};
  app.set_version_flag("--version", std::string("titans ") + TITANS_VERSION_STRING);
  app.require_subcommand(1);

  // make-model
  MakeModelArgs mm;
  CLI::App* make_model = app.add_subcommand(
      "make-model",
      "Write a model file with seeded random weights, for a ModelConfig JSON file or the shape "
      "flags");
  make_model->add_option("OUT", mm.out, "model file to write (safetensors)")->required();
  CLI::Option* config_opt = make_model->add_option(
      "--config", mm.config_path,
      "a whole ModelConfig as JSON (docs/FILE_FORMAT.md; `titans info --config-only` prints "
      "one); instead of the shape flags");
  make_model->add_option("-s,--seed", mm.seed, "seed of the random weights")
      ->capture_default_str()
      ->check(SeedValue());
  // The shape flags, over a small byte-level default: vocab 256, d 64, 2 mag layers, attention
  // 4 heads x 16 with window 64, memory Paper(d, 2 heads, d/2, depth 2, chunk 16).
  CLI::Option_group* shape = make_model->add_option_group(
      "Shape flags", "The model's shape, over a small byte-level default (not with --config)");
  shape->excludes(config_opt);
  CLI::Option* kind_opt =
      shape
          ->add_option("--kind", mm.kind,
                       "layer kinds: lmm|mal|mag|mac|attention (every layer), mixed (lmm, mal, "
                       "mag, mac, attention, repeating; 5 layers unless --layers), or a "
                       "comma-separated list, one per layer")
          ->capture_default_str();
  CLI::Option* layers_opt = shape->add_option("--layers", mm.layers, "number of layers")
                                ->capture_default_str()
                                ->check(AtLeast(1));
  shape->add_option("--d-model", mm.d_model, "model width d")
      ->capture_default_str()
      ->check(AtLeast(1));
  shape->add_option("--vocab", mm.vocab, "vocabulary size; 0 = raw input embeddings")
      ->capture_default_str()
      ->check(AtLeast(0));
  shape->add_option("--ffn-hidden", mm.ffn_hidden, "SwiGLU hidden width [4 * d]")
      ->check(AtLeast(1));
  shape->add_flag("--tied", mm.tied,
                  "use the embedding as the LM head (default: a separate lm_head [d, vocab])");
  shape->add_option("--heads", mm.heads, "attention heads")
      ->capture_default_str()
      ->check(AtLeast(1));
  shape->add_option("--kv-heads", mm.kv_heads, "attention key/value heads [heads]")
      ->check(AtLeast(1));
  shape->add_option("--head-dim", mm.head_dim, "attention head width [d / heads]")
      ->check(AtLeast(1));
  shape->add_option("--window", mm.window, "attention window; 0 = full causal")
      ->capture_default_str()
      ->check(AtLeast(0));
  shape->add_option("--persistent", mm.persistent, "persistent key/value pairs per layer")
      ->capture_default_str()
      ->check(AtLeast(0));
  shape->add_option("--memory-heads", mm.memory_heads, "memory heads")
      ->capture_default_str()
      ->check(AtLeast(1));
  shape->add_option("--memory-head-dim", mm.memory_head_dim, "memory head width [d / memory heads]")
      ->check(AtLeast(1));
  shape->add_option("--memory-depth", mm.memory_depth, "layers of the memory MLP")
      ->capture_default_str()
      ->check(AtLeast(1));
  shape->add_option("--chunk", mm.chunk, "memory commit block (tokens)")
      ->capture_default_str()
      ->check(AtLeast(1));
  CLI::Option* segment_opt =
      shape->add_option("--segment", mm.segment, "MAC segment length [the memory's unit: chunk]")
          ->check(AtLeast(1));
  kind_opt->check(CLI::Validator(
      [](std::string& text) -> std::string {
        try {
          ParseKinds(text, 1);
        } catch (const std::invalid_argument& e) {
          return e.what();
        }
        return "";
      },
      "KIND"));
  AddWeightsOption(*make_model, mm.weights, "f32");

  // convert-weights
  std::string convert_in, convert_out;
  std::optional<WeightType> convert_to;
  CLI::App* convert = app.add_subcommand(
      "convert-weights",
      "Rewrite a model file with its product matrices (attention and memory projections, "
      "feed-forward, LM head) stored as bf16 (rounded: about half the file) or f32 (a bf16 "
      "model's values, widened); every other tensor stays f32");
  convert->add_option("IN", convert_in, "model file to read")->required();
  convert->add_option("OUT", convert_out, "model file to write (atomically; not IN)")->required();
  titans::cli::AddWeightTypeOption(*convert, "--to", convert_to,
                                   "how OUT stores the product matrices: bf16 or f32")
      ->required();

  // info
  std::string info_path;
  bool info_config_only = false;
  CLI::App* info = app.add_subcommand(
      "info",
      "Check any file the engine writes (model, session state, memory weights, memory state, "
      "forward output) and print what it holds");
  info->add_option("FILE", info_path, "the file")->required();
  info->add_flag("--config-only", info_config_only,
                 "print only the config JSON (of a model: a file make-model --config reads)");
  std::optional<WeightType> info_weights;
  AddWeightsOption(*info, info_weights,
                   "as the file stores them; given, info also prints the weights a run with it "
                   "would have (model files only)");

  // generate
  GenerateArgs ga;
  std::string model_positional;
  CLI::App* generate = app.add_subcommand(
      "generate",
      "Feed a prompt and sample a continuation one token at a time, writing it out as it is made");
  generate->add_option("MODEL", model_positional, "model file (or -m MODEL)");
  CLI::Option* model_opt =
      generate->add_option("-m,--model", ga.model, "model file (instead of MODEL)");
  CLI::Option* tokens_opt =
      generate
          ->add_option("--prompt-tokens", ga.prompt_tokens,
                       "prompt token ids, comma-separated; prints the new token ids the same way")
          ->check(IntList(std::numeric_limits<int64_t>::min(), "a token"));
  CLI::Option* text_opt = generate->add_option(
      "-p,--prompt", ga.prompt,
      "prompt text for byte-level models (vocab 256): its UTF-8 bytes are the tokens; - reads "
      "it from standard input; prints the continuation as text");
  CLI::Option* file_opt = generate->add_option(
      "-f,--file", ga.file, "prompt text from a file (- = standard input), as --prompt");
  tokens_opt->excludes(text_opt);
  tokens_opt->excludes(file_opt);
  text_opt->excludes(file_opt);
  generate->add_option("-n,--max-new-tokens", ga.n, "tokens to generate")
      ->capture_default_str()
      ->check(AtLeast(0));
  generate->add_option("--temperature,--temp", ga.temperature, "0 = greedy (argmax)")
      ->capture_default_str()
      ->check(AtLeast(0));
  generate->add_option("--top-k", ga.top_k, "keep the k most likely tokens (0 = all)")
      ->capture_default_str()
      ->check(AtLeast(0));
  generate->add_option("--top-p", ga.top_p, "keep the smallest set reaching this probability")
      ->capture_default_str()
      ->check(NumberIn(0, 1, /*lo_open=*/true));
  generate->add_option("-s,--seed", ga.seed, "seed of the sampler")
      ->capture_default_str()
      ->check(SeedValue());
  generate->add_option("-t,--threads", ga.threads, "OpenMP threads (0 = all)")
      ->capture_default_str()
      ->check(AtLeast(0));
  generate
      ->add_option("--repeat-penalty", ga.repeat_penalty,
                   "divide the positive logits of the last --repeat-last-n tokens by this, "
                   "multiply the others (llama.cpp; 1 = off)")
      ->capture_default_str()
      ->check(GreaterThan(0));
  generate
      ->add_option("--repeat-last-n", ga.repeat_last_n,
                   "tokens the repeat penalty looks back over, prompt included (0 = none, -1 = "
                   "all)")
      ->capture_default_str()
      ->check(AtLeast(-1));
  CLI::Option* stop_opt =
      generate
          ->add_option("--stop", ga.stop,
                       "stop when the output ends with this text (repeatable; text prompts; the "
                       "stop text is written)")
          ->allow_extra_args(false)
          ->take_all()
          ->check(CLI::Validator(
              [](std::string& text) -> std::string {
                return text.empty() ? "must not be empty" : "";
              },
              ""));
  stop_opt->excludes(tokens_opt);
  generate->add_flag("--raw", ga.raw,
                     "with a text prompt: write the bytes as they are (no escapes)");
  generate->add_flag("--stats", ga.stats,
                     "at the end, print the time of the load, the prompt and the generation, and "
                     "each memory layer's health (weight norms, finite, not all zero) to stderr");
  AddWeightsOption(*generate, ga.weights, "as the file stores them");

  // forward
  ForwardArgs fa;
  CLI::App* forward = app.add_subcommand(
      "forward",
      "Run a model over an input file and write its outputs: tokens -> logits, embeddings -> "
      "hidden (docs/CLI.md gives the file formats)");
  forward->add_option("MODEL", fa.model, "model file")->required();
  forward
      ->add_option("--input", fa.input,
                   "safetensors with \"tokens\" (I32 or I64, [T]) or \"embeddings\" (F32, [T, d])")
      ->required();
  forward
      ->add_option("--output", fa.output,
                   "safetensors to write: \"logits\" (F32, [T, vocab]) or \"hidden\" (F32, [T, d])")
      ->required();
  CLI::Option* split_opt =
      forward
          ->add_option("--split", fa.split,
                       "feed the input in pieces of these sizes through one session (the rest "
                       "in one last piece)")
          ->check(IntList(1, "a piece size"));
  CLI::Option* every_opt =
      forward->add_option("--every", fa.every, "feed the input in pieces of N tokens")
          ->check(AtLeast(1));
  split_opt->excludes(every_opt);
  forward->add_option("-t,--threads", fa.threads, "OpenMP threads (0 = all)")
      ->capture_default_str()
      ->check(AtLeast(0));
  forward->add_option("--load-state", fa.load_state,
                      "continue the stream of a session state file (written by --save-state)");
  forward->add_option("--save-state", fa.save_state,
                      "after the input, write the session state to this file");
  forward->add_flag("--stats", fa.stats,
                    "after the input, print each memory layer's health (weight norms, finite, "
                    "not all zero) to stderr");
  AddWeightsOption(*forward, fa.weights, "as the file stores them");

  const std::function<int()> run_bench = titans::cli::AddBenchCommand(app);
  const std::function<int()> run_niah = titans::cli::AddNiahCommand(app);
  const std::function<int()> run_eval = titans::cli::AddEvalCommand(app);

  // `titans`, `titans --help` and `titans bogus`: the commands, one line each.
  const std::string overview = Overview(app);
  if (argc < 2) {
    std::cerr << "error: no command given\n\n" << overview;
    return 2;
  }
  if (const std::string first = argv[1]; !first.starts_with("-")) {
    const auto named = app.get_subcommands([&](CLI::App* sub) { return sub->get_name() == first; });
    if (named.empty()) {
      std::cerr << "error: unknown command \"" << first << "\"\n\n" << overview;
      return 2;
    }
  }

  try {
    app.parse(argc, argv);
    if (forward->parsed()) {
      RefuseCollisions(
          {{"MODEL", fa.model}, {"--input", fa.input}, {"--load-state", fa.load_state}},
          {{"--output", fa.output}, {"--save-state", fa.save_state}},
          {"--save-state", "--load-state"});
    }
    if (make_model->parsed()) RefuseCollisions({{"--config", mm.config_path}}, {{"OUT", mm.out}});
    if (convert->parsed()) RefuseCollisions({{"IN", convert_in}}, {{"OUT", convert_out}});
    if (make_model->parsed() && segment_opt->count() > 0) {
      const int layers = mm.kind == "mixed" && layers_opt->count() == 0 ? 5 : mm.layers;
      const std::vector<BlockKind> kinds = ParseKinds(mm.kind, layers);  // checked by --kind
      if (std::find(kinds.begin(), kinds.end(), BlockKind::kMac) == kinds.end()) {
        throw CLI::ValidationError(
            "--segment", "only MAC layers have segments, and --kind " + mm.kind + " has none");
      }
    }
    if (generate->parsed()) {
      if (model_opt->count() > 0 && !model_positional.empty()) {
        throw CLI::ValidationError("generate", "the model is given twice: as MODEL and as -m");
      }
      if (model_opt->count() == 0) ga.model = model_positional;
      if (ga.model.empty()) {
        throw CLI::ValidationError("generate", "give the model file: MODEL or -m MODEL");
      }
      ga.has_prompt_tokens = tokens_opt->count() > 0;
      ga.has_prompt = text_opt->count() > 0;
      ga.has_file = file_opt->count() > 0;
      if (!ga.has_prompt_tokens && !ga.has_prompt && !ga.has_file) {
        throw CLI::ValidationError("generate", "give --prompt, --file or --prompt-tokens");
      }
    }
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) {  // --help, --version
      if (dynamic_cast<const CLI::CallForHelp*>(&e) != nullptr && app.get_subcommands().empty()) {
        std::cout << overview;
        return 0;
      }
      return app.exit(e);
    }
    std::cerr << "error: " << e.what() << "\n"
              << "Run with --help for more information.\n";
    return 2;
  }

  try {
    if (make_model->parsed()) {
      mm.layers_given = layers_opt->count() > 0;
      return RunMakeModel(mm);
    }
    if (convert->parsed()) return RunConvertWeights(convert_in, convert_out, *convert_to);
    if (info->parsed()) return RunInfo(info_path, info_config_only, info_weights);
    if (generate->parsed()) return RunGenerate(ga);
    if (forward->parsed()) return RunForward(fa);
    if (const int status = run_bench(); status >= 0) return status;
    if (const int status = run_niah(); status >= 0) return status;
    if (const int status = run_eval(); status >= 0) return status;
  } catch (const std::exception& e) {
    std::cout.flush();
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
