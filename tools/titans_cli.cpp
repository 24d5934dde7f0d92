// titans: the command-line program (docs/CLI.md).
//
//   titans make-model OUT [--config CONFIG.json | --kind K --layers N --d-model D ...] [--seed S]
//   titans info MODEL [--config-only]
//   titans generate MODEL (--prompt-tokens 1,2,3 | --prompt TEXT) [-n N] [sampler options]
//   titans forward MODEL --input IN --output OUT [--split a,b,... | --every N]
//                  [--load-state F] [--save-state F]
//   titans bench [--contexts 1K,4K,...] [--kinds lmm,mac,...] [--json F] [--plot F]
//   titans niah [--lengths 1K,4K,...] [--depths 0,50,...] [--trials N] [--baseline] [--json F]
//               [--plot F] [--model MODEL] [--haystack TEXT]
//   titans eval MODEL TEXT [--window W] [--reset-every N] [--max-bytes N] [--json F] [--plot F]
//
// Exit status: 0 on success, 1 when running the command fails (the library's titans::Error:
// a bad model or input file, a token out of range, ...), 2 for a malformed command line. Every
// failure prints one line `error: <message>` to stderr.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "cli_bench.hpp"
#include "cli_eval.hpp"
#include "cli_niah.hpp"
#include "io/safetensors.hpp"
#include "titans/titans.hpp"

#ifndef TITANS_VERSION_STRING
#define TITANS_VERSION_STRING "unknown"
#endif

namespace {

using titans::BlockKind;
using titans::Error;
using titans::ErrorCode;
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

// "1,2,3" (commas and/or spaces) -> integers; throws std::invalid_argument naming the item.
std::vector<int64_t> ParseIntList(const std::string& text) {
  std::vector<int64_t> values;
  std::string item;
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
  };
  for (char c : text) {
    if (c == ',' || c == ' ') {
      flush();
    } else {
      item += c;
    }
  }
  flush();
  if (values.empty()) throw std::invalid_argument("the list is empty");
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
  int segment = 0;  // 0: the memory's unit (chunk)
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
  const titans::Model model(config, std::move(weights));
  model.Save(a.out);
  std::cout << "wrote " << a.out << ": " << config.layers.size() << " layers (" << KindList(config)
            << "), d_model " << config.d_model << ", vocab " << config.vocab_size << ", "
            << ParameterCount(model) << " parameters, seed " << a.seed << "\n";
  return 0;
}

// ---------------------------------------------------------------------------------------------
// info

std::string PrettyConfig(const titans::ModelConfig& config) {
  return nlohmann::ordered_json::parse(config.ToJson()).dump(2);
}

int RunInfo(const std::string& path, bool config_only) {
  const std::shared_ptr<const titans::Model> model = titans::Model::Load(path);  // checks all
  if (config_only) {
    std::cout << PrettyConfig(model->config()) << "\n";
    return 0;
  }
  const io::SafetensorsFile file = io::SafetensorsFile::Open(path);
  std::vector<const io::TensorRecord*> table;
  for (const io::TensorRecord& t : file.tensors()) table.push_back(&t);
  std::stable_sort(table.begin(), table.end(), [](const auto* a, const auto* b) {
    return a->bytes.data() < b->bytes.data();  // file order
  });
  const auto meta = [&](const char* key) {
    const auto it = file.metadata().find(key);
    return it == file.metadata().end() ? std::string("?") : it->second;
  };
  std::cout << "file: " << path << " (" << std::filesystem::file_size(path) << " bytes)\n"
            << "format: " << meta("format") << " version " << meta("format_version") << "\n"
            << "layers: " << KindList(model->config()) << "\n"
            << "config:\n"
            << PrettyConfig(model->config()) << "\n";

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
  int64_t total = 0, bytes = 0;
  for (const auto* t : table) {
    const int64_t n = Elements(t->shape);
    total += n;
    bytes += static_cast<int64_t>(t->bytes.size());
    std::cout << pad(t->name, name_width) << "  " << pad(io::ToString(t->dtype), 5) << "  "
              << pad(ShapeString(t->shape), shape_width) << "  " << n << "\n";
  }
  std::cout << "total: " << total << " parameters, " << bytes << " bytes of tensor data\n";
  return 0;
}

// ---------------------------------------------------------------------------------------------
// generate

struct GenerateArgs {
  std::string model;
  std::string prompt_tokens;
  std::string prompt;
  bool has_prompt_tokens = false, has_prompt = false;
  int n = 32;
  float temperature = 0.0f;
  int top_k = 0;
  float top_p = 1.0f;
  uint64_t seed = 0;
  int threads = 0;
  bool raw = false;
  bool stats = false;
};

// Length of the valid UTF-8 multi-byte sequence starting at bytes[i] (0 if there is none).
size_t Utf8Sequence(const std::vector<int32_t>& bytes, size_t i) {
  const auto at = [&](size_t k) { return static_cast<unsigned>(bytes[k]); };
  const unsigned b0 = at(i);
  size_t length = 0;
  unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    length = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    length = 3;
    if (b0 == 0xE0) lo = 0xA0;  // no overlong forms
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    length = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;  // <= U+10FFFF
  } else {
    return 0;
  }
  if (i + length > bytes.size()) return 0;
  if (at(i + 1) < lo || at(i + 1) > hi) return 0;
  for (size_t k = 2; k < length; ++k) {
    if (at(i + k) < 0x80 || at(i + k) > 0xBF) return 0;
  }
  return length;
}

// Bytes as readable text: printable ASCII, newline, tab and valid UTF-8 sequences as they are,
// a backslash as "\\", every other byte as "\xHH".
std::string EscapeBytes(const std::vector<int32_t>& bytes) {
  std::string s;
  for (size_t i = 0; i < bytes.size();) {
    const int32_t b = bytes[i];
    if (b == '\\') {
      s += "\\\\";
    } else if ((b >= 0x20 && b < 0x7F) || b == '\n' || b == '\t') {
      s += static_cast<char>(b);
    } else if (const size_t n = Utf8Sequence(bytes, i); n > 0) {
      for (size_t k = 0; k < n; ++k) s += static_cast<char>(bytes[i + k]);
      i += n;
      continue;
    } else {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", static_cast<unsigned>(b) & 0xFFu);
      s += hex;
    }
    ++i;
  }
  return s;
}

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

int RunGenerate(const GenerateArgs& a) {
  const std::shared_ptr<const titans::Model> model = titans::Model::Load(a.model);
  const int vocab = model->config().vocab_size;
  if (vocab == 0) {
    Fail(a.model +
         ": this model takes input embeddings (vocab_size 0) and cannot generate "
         "tokens; use `titans forward` with an `embeddings` input");
  }
  std::vector<int32_t> prompt;
  if (a.has_prompt) {
    if (vocab != 256) {
      Fail("--prompt needs a byte-level model (vocab_size 256), " + a.model + " has vocab_size " +
           std::to_string(vocab) + "; use --prompt-tokens");
    }
    if (a.prompt.empty()) Fail("--prompt is empty");
    for (unsigned char c : a.prompt) prompt.push_back(c);
  } else {
    prompt = ToTokens(ParseIntList(a.prompt_tokens), vocab);
  }
  titans::SamplerOptions sampler;
  sampler.temperature = a.temperature;
  sampler.top_k = a.top_k;
  sampler.top_p = a.top_p;
  sampler.seed = a.seed;
  titans::Session session(model, titans::SessionOptions{a.threads});
  const auto start = std::chrono::steady_clock::now();
  const std::vector<int32_t> generated = session.Generate(prompt, a.n, sampler);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  if (a.has_prompt) {
    if (a.raw) {
      for (int32_t b : generated) std::cout.put(static_cast<char>(b));
    } else {
      std::cout << EscapeBytes(generated) << "\n";
    }
  } else {
    for (size_t i = 0; i < generated.size(); ++i) std::cout << (i ? "," : "") << generated[i];
    std::cout << "\n";
  }
  std::cout.flush();
  if (a.stats) {
    std::fprintf(stderr, "%zu prompt tokens, %zu new tokens in %.3f s (%.1f tokens/s)\n",
                 prompt.size(), generated.size(), seconds,
                 static_cast<double>(prompt.size() + generated.size()) / std::max(seconds, 1e-9));
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
  const std::shared_ptr<const titans::Model> model = titans::Model::Load(a.model);
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
  io::WriteSafetensors(a.output, metadata, {{name, io::DType::kF32, {total, width}, out.data()}});
  std::cout << "wrote " << a.output << ": " << name << " " << ShapeString({total, width})
            << " from " << (tokens_record ? "tokens" : "embeddings") << " in " << pieces.size()
            << (pieces.size() == 1 ? " piece" : " pieces");
  if (!a.split.empty()) std::cout << " (" << JoinInts(pieces) << ")";
  if (a.every > 0) std::cout << " of " << a.every;
  std::cout << ", positions " << start_position << ".." << session.position() << "\n";
  if (!a.save_state.empty()) {
    session.Save(a.save_state);
    std::cout << "wrote " << a.save_state << ": session state at position " << session.position()
              << "\n";
  }
  return 0;
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
  make_model->add_option("--seed", mm.seed, "seed of the random weights")->capture_default_str();
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
                                ->check(CLI::PositiveNumber);
  shape->add_option("--d-model", mm.d_model, "model width d")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  shape->add_option("--vocab", mm.vocab, "vocabulary size; 0 = raw input embeddings")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  shape->add_option("--ffn-hidden", mm.ffn_hidden, "SwiGLU hidden width [4 * d]")
      ->check(CLI::PositiveNumber);
  shape->add_flag("--tied", mm.tied,
                  "use the embedding as the LM head (default: a separate lm_head [d, vocab])");
  shape->add_option("--heads", mm.heads, "attention heads")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  shape->add_option("--kv-heads", mm.kv_heads, "attention key/value heads [heads]")
      ->check(CLI::PositiveNumber);
  shape->add_option("--head-dim", mm.head_dim, "attention head width [d / heads]")
      ->check(CLI::PositiveNumber);
  shape->add_option("--window", mm.window, "attention window; 0 = full causal")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  shape->add_option("--persistent", mm.persistent, "persistent key/value pairs per layer")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  shape->add_option("--memory-heads", mm.memory_heads, "memory heads")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  shape->add_option("--memory-head-dim", mm.memory_head_dim, "memory head width [d / memory heads]")
      ->check(CLI::PositiveNumber);
  shape->add_option("--memory-depth", mm.memory_depth, "layers of the memory MLP")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  shape->add_option("--chunk", mm.chunk, "memory commit block (tokens)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  shape->add_option("--segment", mm.segment, "MAC segment length [the memory's unit: chunk]")
      ->check(CLI::PositiveNumber);
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

  // info
  std::string info_model;
  bool info_config_only = false;
  CLI::App* info =
      app.add_subcommand("info", "Check a model file and print its config and its tensor table");
  info->add_option("MODEL", info_model, "model file")->required();
  info->add_flag("--config-only", info_config_only,
                 "print only the config JSON (a file make-model --config reads)");

  // generate
  GenerateArgs ga;
  CLI::App* generate = app.add_subcommand(
      "generate", "Feed a prompt and sample a continuation, one token at a time");
  generate->add_option("MODEL", ga.model, "model file")->required();
  CLI::Option* tokens_opt =
      generate
          ->add_option("--prompt-tokens", ga.prompt_tokens,
                       "prompt token ids, comma-separated; prints the new token ids the same way")
          ->check(IntList(std::numeric_limits<int64_t>::min(), "a token"));
  CLI::Option* text_opt = generate->add_option(
      "--prompt", ga.prompt,
      "prompt text for byte-level models (vocab 256): its UTF-8 bytes are the tokens; prints "
      "the continuation as text");
  tokens_opt->excludes(text_opt);
  generate->add_option("-n,--max-new-tokens", ga.n, "tokens to generate")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  generate->add_option("--temperature", ga.temperature, "0 = greedy (argmax)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  generate->add_option("--top-k", ga.top_k, "keep the k most likely tokens (0 = all)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  generate->add_option("--top-p", ga.top_p, "keep the smallest set reaching this probability")
      ->capture_default_str()
      ->check(CLI::Range(0.0f, 1.0f));
  generate->add_option("--seed", ga.seed, "seed of the sampler")->capture_default_str();
  generate->add_option("--threads", ga.threads, "OpenMP threads (0 = all)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  generate->add_flag("--raw", ga.raw, "with --prompt: write the bytes as they are (no escapes)");
  generate->add_flag("--stats", ga.stats, "print the time taken to stderr");

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
          ->check(CLI::PositiveNumber);
  split_opt->excludes(every_opt);
  forward->add_option("--threads", fa.threads, "OpenMP threads (0 = all)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  forward->add_option("--load-state", fa.load_state,
                      "continue the stream of a session state file (written by --save-state)");
  forward->add_option("--save-state", fa.save_state,
                      "after the input, write the session state to this file");

  const std::function<int()> run_bench = titans::cli::AddBenchCommand(app);
  const std::function<int()> run_niah = titans::cli::AddNiahCommand(app);
  const std::function<int()> run_eval = titans::cli::AddEvalCommand(app);

  try {
    app.parse(argc, argv);
    if (generate->parsed()) {
      ga.has_prompt_tokens = tokens_opt->count() > 0;
      ga.has_prompt = text_opt->count() > 0;
      if (!ga.has_prompt_tokens && !ga.has_prompt) {
        throw CLI::ValidationError("generate", "give --prompt-tokens or --prompt");
      }
    }
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::cerr << "error: " << e.what() << "\n"
              << "Run with --help for more information.\n";
    return 2;
  }

  try {
    if (make_model->parsed()) {
      mm.layers_given = layers_opt->count() > 0;
      return RunMakeModel(mm);
    }
    if (info->parsed()) return RunInfo(info_model, info_config_only);
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
