// The command-line program `titans` (tools/titans_cli.cpp, docs/CLI.md), run as a separate
// process from the build tree: the list of commands, make-model, info on every kind of file,
// generate (token ids and text, llama.cpp's option names, prompts from files and standard input,
// streaming, stop strings, repeat penalty), forward whole and split, and its errors (status 1
// and one `error:` line, never an abort; status 2 and ranges in plain words for the command
// line). tools/CMakeLists.txt defines TITANS_CLI_PATH for this file; without the CLI
// (TITANS_BUILD_CLI=OFF) the tests skip.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "io/safetensors.hpp"
#include "sanitizers.hpp"
#include "svg_check.hpp"
#include "titans/evals/bench_models.hpp"
#include "titans/evals/eval.hpp"
#include "titans/evals/plot.hpp"
#include "titans/evals/utilisation.hpp"
#include "titans/titans.hpp"

namespace titans {
namespace {

#ifdef TITANS_CLI_PATH
const char* const kCli = TITANS_CLI_PATH;
#else
const char* const kCli = nullptr;
#endif

std::string Quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

struct Result {
  int status = -1;  // the exit status; -1 if the process did not exit normally (a signal)
  std::string out, err;
};

std::ostream& operator<<(std::ostream& os, const Result& r) {
  return os << "status " << r.status << "\nstdout:\n" << r.out << "\nstderr:\n" << r.err;
}

double RelativeError(const std::vector<float>& got, const std::vector<float>& expected) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    diff +=
        (static_cast<double>(got[i]) - expected[i]) * (static_cast<double>(got[i]) - expected[i]);
    norm += static_cast<double>(expected[i]) * expected[i];
  }
  return std::sqrt(diff / std::max(norm, 1e-30));
}

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// Whether rsvg-convert runs here, for --plot FILE.png (CI installs it: tools/install-deps.sh).
bool PngConverterRuns() { return plot::ImagePathProblem("x.png").empty(); }

std::string Join(const std::vector<int32_t>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s;
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (kCli == nullptr) GTEST_SKIP() << "built without the titans CLI (TITANS_BUILD_CLI=OFF)";
    const std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    dir_ = std::filesystem::current_path() / ("cli_test_" + name);
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    if (!dir_.empty() && !HasFailure()) std::filesystem::remove_all(dir_);  // kept if failed
  }

  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  // With `input`: a file piped into the program's standard input (`cat input | titans ...`).
  Result Titans(const std::vector<std::string>& args, const std::string& input = "") const {
    std::string command = input.empty() ? "" : "cat " + Quote(input) + " | ";
    command += Quote(kCli);
    for (const std::string& a : args) command += " " + Quote(a);
    command += " >" + Quote(Path("stdout.txt")) + " 2>" + Quote(Path("stderr.txt"));
    const int raw = std::system(command.c_str());
    Result r;
    r.status = raw != -1 && WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
    r.out = ReadFile(Path("stdout.txt"));
    r.err = ReadFile(Path("stderr.txt"));
    return r;
  }

  // Runs `titans` and expects success.
  std::string Ok(const std::vector<std::string>& args) const {
    const Result r = Titans(args);
    EXPECT_EQ(r.status, 0) << r;
    return r.out;
  }

  // Runs `titans` and expects exit status 1 with one line `error: ...` naming `what`.
  void ExpectError(const std::vector<std::string>& args, const std::string& what) const {
    const Result r = Titans(args);
    EXPECT_EQ(r.status, 1) << r;
    EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << r;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r;
    EXPECT_NE(r.err.find(what), std::string::npos) << "expected \"" << what << "\" in\n" << r;
  }

  void WriteTokens(const std::string& path, const std::vector<int64_t>& tokens, io::DType dtype) {
    std::vector<int32_t> narrow(tokens.begin(), tokens.end());
    const void* data = dtype == io::DType::kI64 ? static_cast<const void*>(tokens.data())
                                                : static_cast<const void*>(narrow.data());
    io::WriteSafetensors(path, {},
                         {{"tokens", dtype, {static_cast<int64_t>(tokens.size())}, data}});
  }

  // The F32 tensor `name` of shape `shape` from a file forward wrote.
  static std::vector<float> ReadOutput(const std::string& path, const std::string& name,
                                       const std::vector<int64_t>& shape) {
    const io::SafetensorsFile file = io::SafetensorsFile::Open(path);
    EXPECT_EQ(file.metadata().at("format"), "titans.forward");
    std::vector<float> out(static_cast<size_t>(shape[0] * shape[1]));
    file.ReadF32(name, shape, out);
    return out;
  }

  std::filesystem::path dir_;
};

TEST_F(CliTest, VersionAndHelp) {
  EXPECT_EQ(Ok({"--version"}).rfind("titans ", 0), 0u);
  EXPECT_NE(Ok({"--help"}).find("make-model"), std::string::npos);
  for (const char* sub :
       {"make-model", "convert-weights", "info", "generate", "forward", "bench", "niah", "eval"}) {
    EXPECT_NE(Ok({sub, "--help"}).find(std::string("Usage: titans ") + sub), std::string::npos);
  }
  // A malformed command line: status 2 and an `error:` line.
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{},
        {"bogus"},
        {"generate", "m.safetensors"},
        {"generate", "m.safetensors", "--prompt-tokens", "1,x"},
        {"forward", "m.safetensors", "--input", "in"},
        {"bench", "--kinds", "lmm,bogus"},
        {"bench", "--contexts", "1K,0"},
        {"bench", "--contexts", "4X"}}) {
    const Result r = Titans(args);
    EXPECT_EQ(r.status, 2) << r;
    EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << r;
  }
}

TEST_F(CliTest, MakeModelIsSeededAndInfoListsEveryTensor) {
  Ok({"make-model", Path("a.safetensors"), "--seed", "7"});
  Ok({"make-model", Path("b.safetensors"), "--seed", "7"});
  Ok({"make-model", Path("c.safetensors"), "--seed", "8"});
  EXPECT_EQ(ReadFile(Path("a.safetensors")), ReadFile(Path("b.safetensors")));
  EXPECT_NE(ReadFile(Path("a.safetensors")), ReadFile(Path("c.safetensors")));

  // The documented defaults, and the library's seeded random weights.
  const auto model = Model::Load(Path("a.safetensors"));
  const ModelConfig& c = model->config();
  EXPECT_EQ(c.vocab_size, 256);
  EXPECT_EQ(c.d_model, 64);
  EXPECT_FALSE(c.tie_embeddings);
  EXPECT_EQ(c.layers, std::vector<BlockKind>(2, BlockKind::kMag));
  EXPECT_EQ(c.attention.heads, 4);
  EXPECT_EQ(c.attention.head_dim, 16);
  EXPECT_EQ(c.attention.window, 64);
  MemoryConfig memory = MemoryConfig::Paper(64, 2, 32, 2, 16);
  memory.output_proj = false;
  EXPECT_EQ(c.memory, memory);
  EXPECT_EQ(model->weights().embedding, ModelWeights::Random(c, 7).embedding);
  EXPECT_EQ(model->weights().layers[1].ffn_down, ModelWeights::Random(c, 7).layers[1].ffn_down);

  const std::string info = Ok({"info", Path("a.safetensors")});
  int64_t total = 0;
  for (const ConstTensorView& t : model->weights().Tensors(c)) {
    EXPECT_NE(info.find("\n" + t.name + " "), std::string::npos) << t.name;
    total += t.size();
  }
  EXPECT_NE(info.find("total: " + std::to_string(total) + " parameters"), std::string::npos)
      << info;
  EXPECT_NE(info.find("\"window\": 64"), std::string::npos) << info;
  EXPECT_EQ(ModelConfig::FromJson(Ok({"info", Path("a.safetensors"), "--config-only"})), c);
}

TEST_F(CliTest, MakeModelEveryKindFlagsAndConfigFiles) {
  using K = BlockKind;
  const std::vector<std::pair<std::vector<std::string>, std::vector<BlockKind>>> kinds = {
      {{"--kind", "lmm"}, {K::kLmm, K::kLmm}},
      {{"--kind", "mal"}, {K::kMal, K::kMal}},
      {{"--kind", "mag"}, {K::kMag, K::kMag}},
      {{"--kind", "mac"}, {K::kMac, K::kMac}},
      {{"--kind", "attention", "--layers", "3"}, {K::kAttention, K::kAttention, K::kAttention}},
      {{"--kind", "mixed"}, {K::kLmm, K::kMal, K::kMag, K::kMac, K::kAttention}},
      {{"--kind", "mixed", "--layers", "7"},
       {K::kLmm, K::kMal, K::kMag, K::kMac, K::kAttention, K::kLmm, K::kMal}},
      {{"--kind", "mac,attention,lmm"}, {K::kMac, K::kAttention, K::kLmm}}};
  int i = 0;
  for (const auto& [flags, layers] : kinds) {
    const std::string path = Path("kind" + std::to_string(i++) + ".safetensors");
    std::vector<std::string> args = {"make-model", path};
    args.insert(args.end(), flags.begin(), flags.end());
    Ok(args);
    EXPECT_EQ(Model::Load(path)->config().layers, layers) << flags[1];
    Ok({"info", path});
  }
  ExpectError({"make-model", Path("x.safetensors"), "--kind", "lmm,mal", "--layers", "3"},
              "--layers");
  Ok({"make-model", Path("tied.safetensors"), "--tied"});
  EXPECT_TRUE(Model::Load(Path("tied.safetensors"))->config().tie_embeddings);

  // clang-format off
  Ok({"make-model", Path("flags.safetensors"), "--vocab", "0", "--d-model", "32",
      "--kind", "mal", "--layers", "3", "--heads", "4", "--kv-heads", "2", "--window", "0",
      "--persistent", "3", "--memory-heads", "1", "--memory-depth", "1", "--chunk", "8",
      "--ffn-hidden", "40"});
  // clang-format on
  const ModelConfig f = Model::Load(Path("flags.safetensors"))->config();
  EXPECT_EQ(f.vocab_size, 0);
  EXPECT_FALSE(f.tie_embeddings);
  EXPECT_EQ(f.d_model, 32);
  EXPECT_EQ(f.ffn_hidden, 40);
  EXPECT_EQ(f.layers.size(), 3u);
  EXPECT_EQ(f.attention.kv_heads, 2);
  EXPECT_EQ(f.attention.head_dim, 8);
  EXPECT_EQ(f.attention.window, 0);
  EXPECT_EQ(f.attention.persistent, 3);
  EXPECT_EQ(f.memory.heads, 1);
  EXPECT_EQ(f.memory.head_dim, 32);
  EXPECT_EQ(f.memory.depth, 1);
  EXPECT_EQ(f.memory.chunk, 8);

  // Any config through a JSON file; the weights are ModelWeights::Random(config, seed).
  ModelConfig c;
  c.vocab_size = 48;
  c.d_model = 32;
  c.ffn_hidden = 48;
  c.tie_embeddings = false;
  c.layers = {BlockKind::kMag, BlockKind::kAttention};
  c.attention = {
      .heads = 4, .kv_heads = 1, .head_dim = 8, .window = 5, .persistent = 2, .rope_base = 500.0f};
  c.memory = MemoryConfig::TitansPytorch(32, 2, 16, 4, 8);
  c.memory.output_proj = false;
  std::ofstream(Path("config.json")) << c.ToJson();
  Ok({"make-model", Path("config.safetensors"), "--config", Path("config.json"), "--seed", "3"});
  const auto model = Model::Load(Path("config.safetensors"));
  EXPECT_EQ(model->config(), c);
  EXPECT_EQ(model->weights().lm_head, ModelWeights::Random(c, 3).lm_head);

  std::ofstream(Path("bad.json")) << "{\"vocab_size\": 48";
  ExpectError({"make-model", Path("y.safetensors"), "--config", Path("bad.json")}, "bad.json");
  ExpectError({"make-model", Path("y.safetensors"), "--config", Path("none.json")}, "none.json");
  ExpectError({"make-model", Path("y.safetensors"), "--heads", "4", "--kv-heads", "3"}, "kv_heads");
  EXPECT_FALSE(std::filesystem::exists(Path("y.safetensors")));
  EXPECT_EQ(Titans({"make-model", Path("y.safetensors"), "--config", Path("config.json"),
                    "--layers", "3"})
                .status,
            2);
}

TEST_F(CliTest, GenerateTokenIdsAsTheLibraryDoes) {
  const std::string path = Path("m.safetensors");
  Ok({"make-model", path, "--kind", "mixed", "--layers", "4", "--window", "8", "--chunk", "4",
      "--seed", "2"});
  const auto model = Model::Load(path);
  const std::vector<int32_t> prompt = {5, 6, 7, 200, 31, 9};

  // Greedy and sampled, each equal to Session::Generate with the same options.
  SamplerOptions greedy;
  SamplerOptions sampled{.temperature = 0.9f, .top_k = 20, .top_p = 0.9f, .seed = 4};
  for (const auto& [sampler, extra] :
       {std::pair{greedy, std::vector<std::string>{}},
        std::pair{sampled, std::vector<std::string>{"--temperature", "0.9", "--top-k", "20",
                                                    "--top-p", "0.9", "--seed", "4"}}}) {
    Session session(model, SessionOptions{1});
    const std::vector<int32_t> expected = session.Generate(prompt, 20, sampler);
    std::vector<std::string> args = {"generate", path, "--prompt-tokens", Join(prompt),
                                     "-n",       "20", "--threads",       "1"};
    args.insert(args.end(), extra.begin(), extra.end());
    EXPECT_EQ(Ok(args), Join(expected) + "\n") << sampler.temperature;
  }
  EXPECT_EQ(Ok({"generate", path, "--prompt-tokens", "1", "-n", "0"}), "\n");
}

// Undoes generate's escapes: "\\" is a backslash, "\xHH" a byte, everything else itself.
std::string Unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size() && s[i + 1] == '\\') {
      out += '\\';
      ++i;
    } else if (s[i] == '\\' && i + 3 < s.size() && s[i + 1] == 'x') {
      out += static_cast<char>(std::stoi(s.substr(i + 2, 2), nullptr, 16));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

TEST_F(CliTest, GenerateFromATextPromptPrintsText) {
  const std::string path = Path("m.safetensors");
  Ok({"make-model", path, "--seed", "5"});
  const std::string text = "The memory learns at test time: \xce\xbc\\";
  const std::vector<int32_t> prompt(
      reinterpret_cast<const unsigned char*>(text.data()),
      reinterpret_cast<const unsigned char*>(text.data()) + text.size());
  Session session(Model::Load(path), SessionOptions{1});
  const SamplerOptions sampler{.temperature = 1.0f, .seed = 9};
  const std::vector<int32_t> bytes = session.Generate(prompt, 200, sampler);
  const std::string expected(bytes.begin(), bytes.end());

  const std::vector<std::string> args = {"generate", path,  "--prompt",      text,
                                         "-n",       "200", "--temperature", "1",
                                         "--seed",   "9",   "--threads",     "1"};
  std::vector<std::string> raw_args = args;
  raw_args.push_back("--raw");
  EXPECT_EQ(Ok(raw_args), expected);

  const std::string escaped = Ok(args);
  ASSERT_FALSE(escaped.empty());
  EXPECT_EQ(escaped.back(), '\n');
  EXPECT_EQ(Unescape(escaped.substr(0, escaped.size() - 1)), expected);
  for (unsigned char c : escaped) {
    EXPECT_TRUE(c >= 0x20 || c == '\n' || c == '\t') << "control byte " << int{c} << " printed";
  }
  EXPECT_NE(escaped, expected + "\n");  // 200 random bytes always need an escape
}

TEST_F(CliTest, ForwardWholeAndSplitGiveTheSameLogits) {
  const std::string path = Path("m.safetensors");
  Ok({"make-model", path, "--kind", "mixed", "--layers", "4", "--window", "16", "--chunk", "8",
      "--persistent", "2", "--seed", "3"});
  const int64_t n = 150, vocab = 256;
  std::mt19937 rng(1);
  std::vector<int64_t> tokens(n);
  for (int64_t& t : tokens) t = static_cast<int64_t>(rng() % vocab);
  WriteTokens(Path("in32.safetensors"), tokens, io::DType::kI32);
  WriteTokens(Path("in64.safetensors"), tokens, io::DType::kI64);

  Ok({"forward", path, "--input", Path("in32.safetensors"), "--output", Path("whole.safetensors"),
      "--threads", "1"});
  const std::vector<float> whole = ReadOutput(Path("whole.safetensors"), "logits", {n, vocab});

  // Exactly what the library computes.
  Session session(Model::Load(path), SessionOptions{1});
  const std::vector<int32_t> narrow(tokens.begin(), tokens.end());
  std::vector<float> expected(static_cast<size_t>(n * vocab));
  session.Forward(narrow, expected);
  EXPECT_EQ(whole, expected);

  Ok({"forward", path, "--input", Path("in64.safetensors"), "--output", Path("w64.safetensors"),
      "--threads", "1"});
  EXPECT_EQ(ReadOutput(Path("w64.safetensors"), "logits", {n, vocab}), whole);

  const std::vector<std::vector<std::string>> splits = {
      {"--split", "1,5,17,64"}, {"--split", "149"}, {"--split", "150"},     {"--split", "7,7,7"},
      {"--every", "1"},         {"--every", "13"},  {"--split", "3,61,1,2"}};
  for (const auto& split : splits) {
    // (one thread: two would oversubscribe the cores while ctest runs tests in parallel)
    std::vector<std::string> args = {"forward",   path,
                                     "--input",   Path("in32.safetensors"),
                                     "--output",  Path("split.safetensors"),
                                     "--threads", "1"};
    args.insert(args.end(), split.begin(), split.end());
    Ok(args);
    const std::vector<float> got = ReadOutput(Path("split.safetensors"), "logits", {n, vocab});
    EXPECT_LE(RelativeError(got, whole), 1e-5) << split[0] << " " << split[1];
  }
  const io::SafetensorsFile last = io::SafetensorsFile::Open(Path("split.safetensors"));
  EXPECT_EQ(last.metadata().at("pieces"), "5");  // 3, 61, 1, 2 and the remaining 83
  EXPECT_EQ(last.metadata().at("split"), "3,61,1,2,83");

  ExpectError({"forward", path, "--input", Path("in32.safetensors"), "--output",
               Path("bad.safetensors"), "--split", "100,51"},
              "--split sizes 100,51 add up to more than the 150 tokens");
  EXPECT_FALSE(std::filesystem::exists(Path("bad.safetensors")));
}

TEST_F(CliTest, ForwardContinuesAStreamThroughAStateFile) {
  const std::string path = Path("m.safetensors");
  Ok({"make-model", path, "--kind", "mixed", "--window", "8", "--chunk", "4", "--seed", "6"});
  const int64_t n = 90, cut = 37, vocab = 256;
  std::mt19937 rng(3);
  std::vector<int64_t> tokens(n);
  for (int64_t& t : tokens) t = static_cast<int64_t>(rng() % vocab);
  WriteTokens(Path("all.safetensors"), tokens, io::DType::kI32);
  WriteTokens(Path("head.safetensors"), {tokens.begin(), tokens.begin() + cut}, io::DType::kI32);
  WriteTokens(Path("tail.safetensors"), {tokens.begin() + cut, tokens.end()}, io::DType::kI32);

  // One process, one session: pieces of 37 and 53 tokens.
  Ok({"forward", path, "--input", Path("all.safetensors"), "--output", Path("split.safetensors"),
      "--split", std::to_string(cut), "--threads", "1"});
  const std::vector<float> split = ReadOutput(Path("split.safetensors"), "logits", {n, vocab});
  // Two processes: the state after the first piece goes through a file (bit for bit).
  Ok({"forward", path, "--input", Path("head.safetensors"), "--output", Path("head_out"),
      "--save-state", Path("state.safetensors"), "--threads", "1"});
  Ok({"forward", path, "--input", Path("tail.safetensors"), "--output", Path("tail_out"),
      "--load-state", Path("state.safetensors"), "--threads", "1"});
  const std::vector<float> head = ReadOutput(Path("head_out"), "logits", {cut, vocab});
  const std::vector<float> tail = ReadOutput(Path("tail_out"), "logits", {n - cut, vocab});
  EXPECT_EQ(head, std::vector<float>(split.begin(), split.begin() + cut * vocab));
  EXPECT_EQ(tail, std::vector<float>(split.begin() + cut * vocab, split.end()));
  EXPECT_EQ(io::SafetensorsFile::Open(Path("tail_out")).metadata().at("start_position"),
            std::to_string(cut));

  // A state file of another model is rejected.
  Ok({"make-model", Path("other.safetensors"), "--kind", "lmm"});
  ExpectError({"forward", Path("other.safetensors"), "--input", Path("tail.safetensors"),
               "--output", Path("o"), "--load-state", Path("state.safetensors")},
              "state.safetensors");
}

TEST_F(CliTest, ForwardEmbeddingsWritesHiddenStates) {
  const std::string path = Path("e.safetensors");
  Ok({"make-model", path, "--vocab", "0", "--d-model", "32", "--kind", "lmm,mal,mag"});
  const int64_t n = 40, d = 32;
  std::mt19937 rng(2);
  std::normal_distribution<float> normal;
  std::vector<float> x(static_cast<size_t>(n * d));
  for (float& v : x) v = normal(rng);
  io::WriteSafetensors(Path("in.safetensors"), {},
                       {{"embeddings", io::DType::kF32, {n, d}, x.data()}});

  Ok({"forward", path, "--input", Path("in.safetensors"), "--output", Path("whole.safetensors"),
      "--threads", "1"});
  const std::vector<float> whole = ReadOutput(Path("whole.safetensors"), "hidden", {n, d});
  Session session(Model::Load(path), SessionOptions{1});
  std::vector<float> expected(x.size());
  session.ForwardEmbeddings(x, expected);
  EXPECT_EQ(whole, expected);

  Ok({"forward", path, "--input", Path("in.safetensors"), "--output", Path("split.safetensors"),
      "--split", "3,10,1"});
  EXPECT_LE(RelativeError(ReadOutput(Path("split.safetensors"), "hidden", {n, d}), whole), 1e-5);

  // A token model takes embeddings too and then writes hidden states.
  Ok({"make-model", Path("t.safetensors"), "--d-model", "32"});
  Ok({"forward", Path("t.safetensors"), "--input", Path("in.safetensors"), "--output",
      Path("t_out.safetensors")});
  ReadOutput(Path("t_out.safetensors"), "hidden", {n, d});
}

TEST_F(CliTest, BenchBatchPrintsRatesTrafficAndPrefill) {
  const std::string out =
      Ok({"bench", "--batch", "3", "--kinds", "lmm", "--steps", "4", "--threads", "1"});
  for (const char* text : {"MiB/token", "/bandwidth", "prefill"}) {
    EXPECT_NE(out.find(text), std::string::npos) << text << "\n" << out;
  }
  // A row per stream count: kind, streams, tokens/s, ratio, MiB/token, GB/s, ratio.
  const std::regex row(R"(lmm +([13]) +[0-9]+ +[0-9.]+x +[0-9.]+ +[0-9.]+ +[0-9.]+)");
  EXPECT_EQ(
      std::distance(std::sregex_iterator(out.begin(), out.end(), row), std::sregex_iterator()), 2)
      << out;
}

TEST_F(CliTest, BenchWritesOneRecordPerKindAndContextAndAPlot) {
  // Pieces of 64 tokens: the GEMM baseline is a product of one piece's FLOPs (of 4096 tokens by
  // default, seconds in release and minutes under ASan).
  const std::string out =
      Ok({"bench", "--contexts", "256,512", "--kinds", "lmm,full", "--threads", "1", "--piece",
          "64", "--json", Path("bench.json"), "--plot", Path("bench.svg")});
  EXPECT_NE(out.find("lmm"), std::string::npos) << out;
  EXPECT_NE(out.find("512 / 256"), std::string::npos) << out;  // the ratios of each kind
  const auto records = nlohmann::json::parse(ReadFile(Path("bench.json")));
  ASSERT_TRUE(records.is_array());
  ASSERT_EQ(records.size(), 4u) << records.dump(2);
  size_t i = 0;
  for (const char* kind : {"lmm", "full"}) {
    for (int64_t context : {256, 512}) {
      const auto& r = records[i++];
      EXPECT_EQ(r.at("kind"), kind) << r;
      EXPECT_EQ(r.at("context"), context) << r;
      EXPECT_EQ(r.at("status"), "ok") << r;
      EXPECT_EQ(r.at("tokens"), context) << r;
      EXPECT_EQ(r.at("threads"), 1) << r;
      EXPECT_EQ(r.at("weights"), "f32") << r;
      const double tokens_per_s = r.at("tokens_per_s"), s_per_token = r.at("s_per_token");
      EXPECT_GT(tokens_per_s, 0) << r;
      EXPECT_NEAR(tokens_per_s * s_per_token, 1.0, 1e-9) << r;
      EXPECT_GT(r.at("last_piece_s_per_token").get<double>(), 0) << r;
      EXPECT_GT(r.at("peak_rss_bytes").get<int64_t>(), 1 << 20) << r;
      // Utilisation: the products of the prefilled positions over its time, against the GEMM.
      const ModelConfig config = bench::BenchModelConfig(*bench::ModelKindNamed(kind));
      const double seconds = r.at("seconds"), gflops = r.at("gflops");
      EXPECT_NEAR(gflops, bench::TokensFlops(config, 0, context) / seconds / 1e9, 1e-9 * gflops)
          << r;
      EXPECT_GT(r.at("gemm_gflops").get<double>(), 0) << r;
      EXPECT_NEAR(r.at("gemm_ratio").get<double>(), gflops / r.at("gemm_gflops").get<double>(),
                  1e-12)
          << r;
      // The session's own heap bytes: its state and caches, less than the whole process
      // (unknown under ASan, whose allocator keeps no glibc statistics).
      if (testing::kUnderAddressSanitizer) {
        EXPECT_TRUE(r.at("session_bytes").is_null()) << r;
      } else {
        EXPECT_GT(r.at("session_bytes").get<int64_t>(), 1 << 16) << r;
      }
    }
  }
  // full attention keeps every key: its session holds more than lmm's at the same context.
  if (!testing::kUnderAddressSanitizer) {
    EXPECT_GT(records[3].at("session_bytes").get<int64_t>(),
              records[1].at("session_bytes").get<int64_t>());
  }
  const std::string svg = ReadFile(Path("bench.svg"));
  EXPECT_EQ(testing::SvgProblem(svg), "") << svg;
  for (const char* text :
       {">lmm<", ">full<", ">256<", ">512<", "Average time per token", "Last piece: time per token",
        "The session's own memory", "Peak resident memory"}) {
    EXPECT_NE(svg.find(text), std::string::npos) << text;
  }

  // --max-seconds: the first point stops after its first piece and is recorded as skipped with
  // the reason, and so are the larger contexts of that kind.
  Ok({"bench", "--contexts", "256,512", "--kinds", "lmm", "--threads", "1", "--piece", "64",
      "--max-seconds", "1e-6", "--json", Path("capped.json"), "--plot", Path("capped.svg")});
  const auto capped = nlohmann::json::parse(ReadFile(Path("capped.json")));
  ASSERT_EQ(capped.size(), 2u) << capped.dump(2);
  for (const auto& r : capped) {
    EXPECT_EQ(r.at("status"), "skipped") << r;
    EXPECT_TRUE(r.at("tokens_per_s").is_null()) << r;
  }
  EXPECT_EQ(capped[0].at("tokens"), 64) << capped[0];
  EXPECT_NE(capped[0].at("reason").get<std::string>().find("stopped at --max-seconds"),
            std::string::npos);
  EXPECT_NE(capped[1].at("reason").get<std::string>().find("a smaller context"), std::string::npos);
  // The plot marks both points with a cross in each of its four charts, and says why.
  const std::string capped_svg = ReadFile(Path("capped.svg"));
  EXPECT_EQ(testing::SvgProblem(capped_svg), "") << capped_svg;
  EXPECT_EQ(Count(capped_svg, "class=\"skipped\""), 2u * 4u) << capped_svg;
  EXPECT_NE(capped_svg.find("lmm at 256: skipped, stopped at --max-seconds 1e-06 after 64 tokens"),
            std::string::npos)
      << capped_svg;
  EXPECT_NE(capped_svg.find("lmm at 512: skipped, a smaller context"), std::string::npos);
  // The same plot as PNG (CI installs rsvg-convert; skipped where it is missing).
  if (PngConverterRuns()) {
    Ok({"bench", "--contexts", "256", "--kinds", "lmm", "--threads", "1", "--piece", "64", "--plot",
        Path("capped.png")});
    EXPECT_EQ(ReadFile(Path("capped.png")).substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  }

  // An output that cannot be written: status 1 after the run, nothing left behind.
  ExpectError({"bench", "--contexts", "64", "--kinds", "lmm", "--json", Path("no/such/dir.json")},
              "no/such/dir.json");
}

TEST_F(CliTest, NiahRunsTheGridWithBaselinesAndWritesJsonAndHeatmaps) {
  const std::string out = Ok({"niah", "--lengths", "1K,2K", "--depths", "0,100", "--trials", "2",
                              "--threads", "1", "--baseline", "--full-max", "1K", "--json",
                              Path("niah.json"), "--plot", Path("niah.svg")});
  EXPECT_NE(out.find("writes off"), std::string::npos) << out;
  const auto records = nlohmann::json::parse(ReadFile(Path("niah.json")));
  ASSERT_TRUE(records.is_array());
  // titans and writes_off: 2 lengths x 2 depths; full attention only up to --full-max (1K).
  ASSERT_EQ(records.size(), 4u + 4u + 2u) << records.dump(2);
  for (const auto& r : records) {
    const std::string model = r.at("model");
    const int64_t length = r.at("length");
    const double depth = r.at("depth");
    EXPECT_EQ(r.at("trials"), 2) << r;
    EXPECT_EQ(r.at("answers").size(), 2u) << r;
    EXPECT_EQ(r.at("haystack"), "noise") << r;
    // The needle at depth 0 is beyond the 256-token window: only the memory (or full attention)
    // recalls it; at depth 100 it is within the window.
    const double expected = model == "writes_off" && depth == 0 ? 0.0 : 1.0;
    EXPECT_EQ(r.at("accuracy").get<double>(), expected) << r;
    if (model == "full_attention") {
      EXPECT_EQ(length, 1024) << r;
    }
  }
  // One figure: the three models side by side under one labelled colour bar, a caption with
  // the haystack, the trials per cell and the seed, and the n/a cells (full attention at 2K)
  // explained.
  EXPECT_FALSE(std::filesystem::exists(Path("niah_writes_off.svg")));
  const std::string svg = ReadFile(Path("niah.svg"));
  EXPECT_EQ(testing::SvgProblem(svg), "") << svg;
  for (const char* text :
       {">titans: constructed model, window 256<", ">baseline: memory writes off (step size 0)<",
        ">baseline: full attention, no memory (&lt;= 1K)<", ">exact-match accuracy<",
        "haystack: the noise block &quot;The grass is green. ...&quot; repeated; 2 trials "
        "(needles) per cell, seed 0<",
        ">n/a: not run: full attention only up to --full-max 1K"}) {
    EXPECT_EQ(Count(svg, text), 1u) << text << "\n" << svg;
  }
  EXPECT_EQ(Count(svg, "fill=\"url(#scale)\""), 1u);
  EXPECT_EQ(Count(svg, ">n/a<"), 2u);
  EXPECT_EQ(Count(svg, ">2K<"), 3u);
  ExpectError({"niah", "--lengths", "100"}, "cannot hold the needle");
  const Result malformed = Titans({"niah", "--lengths", "4X"});  // a command-line error
  EXPECT_EQ(malformed.status, 2) << malformed;
  EXPECT_NE(malformed.err.find("--lengths"), std::string::npos) << malformed;
  ExpectError({"niah", "--haystack", Path("missing.txt")}, "missing.txt");
  const Result pdf = Titans({"niah", "--plot", Path("niah.pdf")});  // refused at once
  EXPECT_EQ(pdf.status, 2) << pdf;
  EXPECT_NE(pdf.err.find("*.svg or *.png"), std::string::npos) << pdf;
  // PNG without rsvg-convert on PATH: refused before the run, naming the package.
  const std::string path = std::getenv("PATH") ? std::getenv("PATH") : "";
  ::setenv("PATH", dir_.c_str(), 1);
  const Result png = Titans({"niah", "--plot", Path("niah.png")});
  ::setenv("PATH", path.c_str(), 1);
  EXPECT_EQ(png.status, 2) << png;
  EXPECT_NE(png.err.find("librsvg2-bin"), std::string::npos) << png;
  EXPECT_FALSE(std::filesystem::exists(Path("niah.png")));
}

TEST_F(CliTest, EvalPrintsBitsPerByteByPositionAndWritesJsonAndAPlot) {
  const std::string model = Path("m.safetensors"), text = Path("text.txt");
  Ok({"make-model", model});  // mag, window 64, memory unit 16
  std::string prose;
  for (int i = 0; prose.size() < 1500; ++i) {
    prose += "Line " + std::to_string(i) + ": the memory learns at test time. ";
  }
  prose.resize(1500);
  std::ofstream(text, std::ios::binary) << prose;

  const std::string out = Ok({"eval", model, text, "--reset-every", "256", "--threads", "1",
                              "--json", Path("e.json"), "--plot", Path("e.svg")});
  for (const char* s :
       {"1500 bytes", "1499 predicted", "W = 64 (attention window)", "writes on", "writes off",
        "reset every 256", "0-64", "64-256", "256-1K", "1K-1500", "overall", "wrote "}) {
    EXPECT_NE(out.find(s), std::string::npos) << s << " in\n" << out;
  }
  // The records: 3 variants x (4 buckets + overall), the same figures as the library's.
  const auto records = nlohmann::json::parse(ReadFile(Path("e.json")));
  ASSERT_TRUE(records.is_array());
  ASSERT_EQ(records.size(), 15u) << records.dump(2);
  const eval::Evaluation e =
      eval::Evaluate(Model::Load(model), prose, {.reset_every = 256, .threads = 1});
  const int64_t bounds[5] = {0, 64, 256, 1024, 1500};
  size_t i = 0;
  for (const eval::Variant& v : e.variants) {
    int64_t tokens = 0;
    for (int k = 0; k < 5; ++k, ++i) {
      const auto& r = records[i];
      const bool overall = k == 4;
      const eval::Bucket& b = overall ? v.result.overall : v.result.buckets[static_cast<size_t>(k)];
      const eval::Bucket& on = overall ? e.variants[0].result.overall
                                       : e.variants[0].result.buckets[static_cast<size_t>(k)];
      EXPECT_EQ(r.at("model"), model) << r;
      EXPECT_EQ(r.at("text"), text) << r;
      EXPECT_EQ(r.at("bytes"), 1500) << r;
      EXPECT_EQ(r.at("window"), 64) << r;
      EXPECT_EQ(r.at("variant"), v.name) << r;
      EXPECT_EQ(r.at("overall"), overall) << r;
      EXPECT_EQ(r.at("bucket_begin"), overall ? 0 : bounds[k]) << r;
      EXPECT_EQ(r.at("bucket_end"), overall ? 1500 : bounds[k + 1]) << r;
      EXPECT_EQ(r.at("tokens"), b.tokens) << r;
      EXPECT_DOUBLE_EQ(r.at("bits_per_byte").get<double>(), b.bits_per_byte()) << r;
      EXPECT_DOUBLE_EQ(r.at("difference").get<double>(), b.bits_per_byte() - on.bits_per_byte());
      if (v.name == "reset") {
        EXPECT_EQ(r.at("reset_every"), 256) << r;
      } else {
        EXPECT_TRUE(r.at("reset_every").is_null()) << r;
      }
      if (!overall) tokens += r.at("tokens").get<int64_t>();
    }
    EXPECT_EQ(tokens, 1499);  // the buckets partition the predicted bytes
  }
  EXPECT_EQ(records[4].at("difference"), 0.0);  // writes on against itself
  const std::string svg = ReadFile(Path("e.svg"));
  EXPECT_EQ(testing::SvgProblem(svg), "") << svg;
  for (const char* s : {">writes on<", ">writes off<", ">reset every 256<", ">64<", ">1K<",
                        "Bits per byte by position", "Difference against writes on"}) {
    EXPECT_NE(svg.find(s), std::string::npos) << s;
  }

  // --window and --max-bytes: other buckets, a shorter text.
  Ok({"eval", model, text, "--window", "100", "--max-bytes", "1000", "--threads", "1", "--json",
      Path("w.json")});
  const auto w = nlohmann::json::parse(ReadFile(Path("w.json")));
  ASSERT_EQ(w.size(), 2u * 4u) << w.dump(2);  // [0,100) [100,400) [400,1000), overall
  EXPECT_EQ(w[2].at("bucket_end"), 1000);
  EXPECT_EQ(w[3].at("tokens"), 999);
  EXPECT_EQ(w[3].at("window"), 100);

  // Bad input: status 1, one error line, no output file.
  std::ofstream(Path("empty.txt")) << "";
  std::ofstream(Path("one.txt")) << "x";
  Ok({"make-model", Path("v48.safetensors"), "--vocab", "48", "--d-model", "32"});
  Ok({"make-model", Path("v0.safetensors"), "--vocab", "0", "--d-model", "32"});
  Ok({"make-model", Path("attention.safetensors"), "--kind", "attention", "--d-model", "32"});
  const std::string json = Path("bad.json");
  const std::vector<std::pair<std::vector<std::string>, std::string>> bad = {
      {{"eval", model, Path("missing.txt")}, "missing.txt"},
      {{"eval", model, dir_.string()}, "is a directory"},
      {{"eval", model, Path("empty.txt")}, "is empty"},
      {{"eval", model, Path("one.txt")}, "at least 2"},
      {{"eval", model, text, "--max-bytes", "1"}, "at least 2"},
      {{"eval", Path("missing.safetensors"), text}, "missing.safetensors"},
      {{"eval", Path("v48.safetensors"), text}, "vocab_size 256"},
      {{"eval", Path("v0.safetensors"), text}, "input embeddings"},
      {{"eval", model, text, "--reset-every", "100"}, "multiple of the memory's unit (16"},
      {{"eval", Path("attention.safetensors"), text, "--reset-every", "64"}, "no memory"},
      {{"eval", model, text, "--plot", Path("no/such/dir/e.svg")}, "does not exist"},
  };
  for (auto [args, what] : bad) {
    args.insert(args.end(), {"--json", json});
    ExpectError(args, what);
    EXPECT_FALSE(std::filesystem::exists(json)) << args[2];
  }
  // A malformed command line: status 2.
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"eval", model},
                                             {"eval", model, text, "--piece", "0"},
                                             {"eval", model, text, "--window", "0"},
                                             {"eval", model, text, "--reset-every", "x"},
                                             {"eval", model, text, "--plot", Path("e.pdf")}}) {
    const Result r = Titans(args);
    EXPECT_EQ(r.status, 2) << r;
    EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << r;
  }
}

TEST_F(CliTest, ErrorsExitWithStatusOneAndAnErrorLine) {
  const std::string model = Path("m.safetensors");
  Ok({"make-model", model, "--d-model", "32"});
  WriteTokens(Path("in.safetensors"), {1, 2, 3}, io::DType::kI32);

  // Bad model files: missing, not safetensors, truncated.
  const std::string missing = Path("missing.safetensors");
  std::ofstream(Path("garbage.safetensors")) << "this is not a model file";
  const std::string bytes = ReadFile(model);
  std::ofstream(Path("truncated.safetensors"), std::ios::binary)
      << bytes.substr(0, bytes.size() / 2);
  for (const std::string& bad :
       {missing, Path("garbage.safetensors"), Path("truncated.safetensors")}) {
    ExpectError({"info", bad}, bad);
    ExpectError({"generate", bad, "--prompt-tokens", "1,2"}, bad);
    ExpectError({"forward", bad, "--input", Path("in.safetensors"), "--output", Path("o")}, bad);
  }
  ExpectError({"forward", model, "--input", missing, "--output", Path("o")}, missing);
  ExpectError({"forward", model, "--input", Path("garbage.safetensors"), "--output", Path("o")},
              "garbage.safetensors");

  // Tokens outside the vocabulary.
  ExpectError({"generate", model, "--prompt-tokens", "1,256"}, "token 256 at index 1");
  ExpectError({"generate", model, "--prompt-tokens", "-1"}, "token -1 at index 0");
  ExpectError({"generate", model, "--prompt-tokens", "1,5000000000"}, "token 5000000000");
  WriteTokens(Path("oor.safetensors"), {1, 2, 300}, io::DType::kI64);
  ExpectError({"forward", model, "--input", Path("oor.safetensors"), "--output", Path("o")},
              "token 300 at index 2");
  EXPECT_FALSE(std::filesystem::exists(Path("o")));

  // Inputs of the wrong kind, type or shape.
  Ok({"make-model", Path("v48.safetensors"), "--vocab", "48", "--d-model", "32"});
  ExpectError({"generate", Path("v48.safetensors"), "--prompt", "hi"}, "vocab_size 256");
  Ok({"make-model", Path("v0.safetensors"), "--vocab", "0", "--d-model", "32"});
  ExpectError({"generate", Path("v0.safetensors"), "--prompt-tokens", "1"}, "embeddings");
  ExpectError(
      {"forward", Path("v0.safetensors"), "--input", Path("in.safetensors"), "--output", Path("o")},
      "embeddings");
  const float f[6] = {1, 2, 3, 4, 5, 6};
  const int32_t i[6] = {1, 2, 3, 4, 5, 6};
  const std::vector<std::pair<std::vector<io::TensorToWrite>, std::string>> inputs = {
      {{{"other", io::DType::kF32, {6}, f}}, "neither"},
      {{{"tokens", io::DType::kF32, {6}, f}}, "expected I32 or I64"},
      {{{"tokens", io::DType::kI32, {2, 3}, i}}, "expected [T]"},
      {{{"embeddings", io::DType::kF32, {2, 3}, f}}, "expected [T, 32]"},
      {{{"tokens", io::DType::kI32, {6}, i}, {"embeddings", io::DType::kF32, {2, 3}, f}}, "both"}};
  for (const auto& [tensors, what] : inputs) {
    io::WriteSafetensors(Path("input.safetensors"), {}, tensors);
    ExpectError({"forward", model, "--input", Path("input.safetensors"), "--output", Path("o")},
                what);
  }
  EXPECT_FALSE(std::filesystem::exists(Path("o")));
}

// Issue 13, items 4 and 5: the outputs of one command are all written or none, and no output
// may name an input or another output.
TEST_F(CliTest, ForwardWritesAllOutputsOrNoneAndNeverOverItsInputs) {
  const std::string model = Path("m.safetensors"), in = Path("in.safetensors");
  Ok({"make-model", model, "--d-model", "32"});
  WriteTokens(in, {1, 2, 3}, io::DType::kI32);
  const std::string model_bytes = ReadFile(model), in_bytes = ReadFile(in);

  // The state cannot be written (no such directory): the logits are not written either, and an
  // older output file keeps its contents.
  ExpectError({"forward", model, "--input", in, "--output", Path("o"), "--save-state",
               Path("nodir/s.safetensors")},
              "nodir/s.safetensors");
  EXPECT_FALSE(std::filesystem::exists(Path("o")));
  std::ofstream(Path("old")) << "old logits";
  ExpectError({"forward", model, "--input", in, "--output", Path("old"), "--save-state",
               Path("nodir/s.safetensors")},
              "nodir/s.safetensors");
  EXPECT_EQ(ReadFile(Path("old")), "old logits");

  // Collisions, by path or by the same file under another name (a hard link).
  ASSERT_EQ(::link(model.c_str(), Path("alias.safetensors").c_str()), 0);
  const std::vector<std::pair<std::vector<std::string>, std::string>> refused = {
      {{"forward", model, "--input", in, "--output", model},
       "--output: " + model + " is the MODEL file: writing it would destroy it"},
      {{"forward", model, "--input", in, "--output", Path("alias.safetensors")},
       "is the MODEL file"},
      {{"forward", model, "--input", in, "--output", in}, "is the --input file"},
      {{"forward", model, "--input", in, "--output", Path("o"), "--save-state", Path("o")},
       "--save-state: " + Path("o") + " is also the --output file"},
      {{"forward", model, "--input", in, "--output", Path("o"), "--save-state", model},
       "is the MODEL file"},
      {{"forward", model, "--input", in, "--output", Path("./in.safetensors")},
       "is the --input file"},
      {{"make-model", Path("c.json"), "--config", Path("c.json")}, "OUT: " + Path("c.json")},
  };
  std::ofstream(Path("c.json")) << "{}";
  for (const auto& [args, message] : refused) {
    const Result r = Titans(args);
    EXPECT_EQ(r.status, 2) << r;
    EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << r;
    EXPECT_NE(r.err.find(message), std::string::npos) << "expected " << message << "\n" << r;
  }
  EXPECT_EQ(ReadFile(model), model_bytes);
  EXPECT_EQ(ReadFile(in), in_bytes);
  EXPECT_FALSE(std::filesystem::exists(Path("o")));

  // Continuing a stream and saving it back over the state it loaded is allowed.
  Ok({"forward", model, "--input", in, "--output", Path("o1"), "--save-state", Path("s")});
  Ok({"forward", model, "--input", in, "--output", Path("o2"), "--load-state", Path("s"),
      "--save-state", Path("s")});
  EXPECT_EQ(io::SafetensorsFile::Open(Path("o2")).metadata().at("start_position"), "3");
  std::vector<std::string> left;  // no staged or temporary file remains
  for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
    const std::string name = entry.path().filename().string();
    if (name.find(".tmp.") != std::string::npos) left.push_back(name);
  }
  EXPECT_TRUE(left.empty()) << left.front();
}

// Issue 13, item 10: --stats shows every memory layer's health.
TEST_F(CliTest, StatsShowEveryMemoryLayersHealth) {
  const std::string model = Path("m.safetensors"), in = Path("in.safetensors");
  Ok({"make-model", model, "--kind", "attention,mag,lmm", "--d-model", "32", "--window", "8",
      "--chunk", "4"});
  WriteTokens(in, {1, 2, 3, 4, 5, 6, 7, 8, 9}, io::DType::kI32);
  const Result r = Titans({"forward", model, "--input", in, "--output", Path("o"), "--stats"});
  ASSERT_EQ(r.status, 0) << r;
  const std::regex line(
      R"(memory: layer (\d) \((mag|lmm)\) at position 9: \|W\| [0-9.e+-]+ \(W0 [0-9.e+-]+\), )"
      R"(\|momentum\| [0-9.e+-]+, finite\n)");
  std::vector<std::string> layers;
  for (auto it = std::sregex_iterator(r.err.begin(), r.err.end(), line);
       it != std::sregex_iterator(); ++it) {
    layers.push_back((*it)[1].str() + (*it)[2].str());
  }
  EXPECT_EQ(layers, (std::vector<std::string>{"1mag", "2lmm"})) << r;

  const Result g = Titans({"generate", model, "--prompt-tokens", "1,2,3", "-n", "4", "--stats"});
  ASSERT_EQ(g.status, 0) << g;
  EXPECT_NE(g.err.find("memory: layer 1 (mag) at position 6: |W| "), std::string::npos) << g;
  EXPECT_NE(g.err.find("memory: layer 2 (lmm) at position 6: |W| "), std::string::npos) << g;
}

// Issue 13, item 9: values that used to be coerced or accepted are refused (exit status 2).
TEST_F(CliTest, OutOfRangeAndMalformedValuesAreRefusedNotCoerced) {
  const std::string m = Path("m.safetensors");
  Ok({"make-model", m, "--d-model", "32"});
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"generate", m, "-p", "x", "--seed", "-1"},
       "--seed: must be an integer between 0 and 18446744073709551615, got \"-1\""},
      {{"generate", m, "-p", "x", "-s", "18446744073709551616"}, "--seed: must be an integer"},
      {{"make-model", Path("x"), "--seed", "-1"}, "--seed: must be an integer"},
      {{"generate", m, "--prompt-tokens", "1,,2"}, "an empty item in \"1,,2\""},
      {{"generate", m, "--prompt-tokens", "1,"}, "an empty item"},
      {{"generate", m, "--prompt-tokens", ",1"}, "an empty item"},
      {{"generate", m, "-p", "x", "--temperature", "nan"}, "--temperature: must be a number"},
      {{"generate", m, "-p", "x", "--top-p", "nan"}, "--top-p: must be a number"},
      {{"bench", "--contexts", "1234567890123456789012345678901"},
       "--contexts: must be a token count such as 4096, 4K or 1M"},
      {{"bench", "--contexts", "2048G"}, "between 0 and 1024G"},
      {{"bench", "--contexts", "4x"}, "got \"4x\""},
      {{"make-model", Path("x"), "--kind", "mag", "--segment", "64"},
       "--segment: only MAC layers have segments, and --kind mag has none"},
  };
  for (const auto& [args, message] : cases) {
    const Result r = Titans(args);
    EXPECT_EQ(r.status, 2) << r;
    EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << r;
    EXPECT_NE(r.err.find(message), std::string::npos) << "expected " << message << "\n" << r;
  }
  EXPECT_FALSE(std::filesystem::exists(Path("x")));
  // Spaces still separate, and suffixes still scale.
  Ok({"generate", m, "--prompt-tokens", "1, 2 3", "-n", "1"});
  Ok({"make-model", Path("mac.safetensors"), "--kind", "mac", "--chunk", "8", "--segment", "8"});
}

// ---------------------------------------------------------------------------------------------
// Issue 15: the command line as a person meets it.

constexpr const char* kCommands[] = {"make-model", "convert-weights", "info", "generate",
                                     "forward",    "bench",           "niah", "eval"};

// The lines of `text` under "Commands:" up to the next blank line.
std::vector<std::string> CommandLines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  std::string line;
  bool inside = false;
  while (std::getline(in, line)) {
    if (inside && line.empty()) break;
    if (inside) lines.push_back(line);
    if (line == "Commands:") inside = true;
  }
  return lines;
}

void ExpectCommandList(const std::string& text) {
  const std::vector<std::string> lines = CommandLines(text);
  ASSERT_EQ(lines.size(), std::size(kCommands)) << text;
  for (size_t i = 0; i < lines.size(); ++i) {
    // "  name  summary": one line per command, in the order they are defined.
    EXPECT_EQ(lines[i].rfind("  " + std::string(kCommands[i]) + " ", 0), 0u) << lines[i];
    EXPECT_GT(lines[i].size(), 20u) << lines[i];
    EXPECT_LE(lines[i].size(), 100u) << lines[i];
  }
}

TEST_F(CliTest, CommandsAreListedOneLineEach) {
  const Result none = Titans({});  // a malformed command line: status 2, the list on stderr
  EXPECT_EQ(none.status, 2) << none;
  EXPECT_EQ(none.err.rfind("error: no command given\n", 0), 0u) << none;
  EXPECT_EQ(none.out, "");
  ExpectCommandList(none.err);
  for (const char* help : {"--help", "-h"}) {
    const Result r = Titans({help});
    EXPECT_EQ(r.status, 0) << r;
    EXPECT_EQ(r.err, "") << r;
    ExpectCommandList(r.out);
    EXPECT_NE(r.out.find("Usage: titans COMMAND"), std::string::npos) << r;
  }
  const Result bogus = Titans({"bogus"});
  EXPECT_EQ(bogus.status, 2) << bogus;
  EXPECT_EQ(bogus.err.rfind("error: unknown command \"bogus\"\n", 0), 0u) << bogus;
  ExpectCommandList(bogus.err);
  // A command's own --help is CLI11's, with every option.
  EXPECT_NE(Ok({"generate", "--help"}).find("--repeat-penalty"), std::string::npos);
}

TEST_F(CliTest, RangeErrorsNameTheRangeInPlainWords) {
  const std::string m = Path("m.safetensors");
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"generate", m, "-p", "x", "--temperature", "-1"},
       "--temperature: must be at least 0, got -1"},
      {{"generate", m, "-p", "x", "--temp", "-0.5"}, "--temperature: must be at least 0, got -0.5"},
      {{"generate", m, "-p", "x", "--temp", "hot"},
       "--temperature: must be a number at least 0, got \"hot\""},
      {{"generate", m, "-p", "x", "--top-p", "0"},
       "--top-p: must be greater than 0 and at most 1, got 0"},
      {{"generate", m, "-p", "x", "--top-p", "1.5"},
       "--top-p: must be greater than 0 and at most 1, got 1.5"},
      {{"generate", m, "-p", "x", "--top-k", "-3"}, "--top-k: must be at least 0, got -3"},
      {{"generate", m, "-p", "x", "-n", "-1"}, "--max-new-tokens: must be at least 0, got -1"},
      {{"generate", m, "-p", "x", "-t", "-2"}, "--threads: must be at least 0, got -2"},
      {{"generate", m, "-p", "x", "--repeat-penalty", "0"},
       "--repeat-penalty: must be greater than 0, got 0"},
      {{"generate", m, "-p", "x", "--repeat-last-n", "-2"},
       "--repeat-last-n: must be at least -1, got -2"},
      {{"make-model", m, "--d-model", "0"}, "--d-model: must be at least 1, got 0"},
      {{"make-model", m, "--window", "-1"}, "--window: must be at least 0, got -1"},
      {{"forward", m, "--input", m, "--output", m, "--every", "0"},
       "--every: must be at least 1, got 0"},
      {{"bench", "--contexts", "1K,0"}, "--contexts: must be at least 1, got 0"},
      {{"bench", "--max-seconds", "-1"}, "--max-seconds: must be at least 0, got -1"},
      {{"niah", "--depths", "0,150"}, "--depths: must be between 0 and 100, got 150"},
      {{"niah", "--window", "2000"}, "--window: must be between 1 and 1024, got 2000"},
      {{"eval", m, m, "--piece", "0"}, "--piece: must be at least 1, got 0"},
  };
  for (const auto& [args, message] : cases) {
    const Result r = Titans(args);
    EXPECT_EQ(r.status, 2) << r;
    EXPECT_EQ(r.err.rfind("error: " + message + "\n", 0), 0u) << "expected " << message << "\n"
                                                              << r;
    EXPECT_LT(r.err.size(), 200u) << r;  // no 300-digit bound
  }
}

TEST_F(CliTest, GenerateTakesLlamaCppOptionNames) {
  const std::string m = Path("m.safetensors");
  Ok({"make-model", m, "-s", "4"});
  Ok({"make-model", Path("same.safetensors"), "--seed", "4"});
  EXPECT_EQ(ReadFile(m), ReadFile(Path("same.safetensors")));  // -s = --seed

  const std::string prompt = "Titans learn";
  Session session(Model::Load(m), SessionOptions{1});
  const SamplerOptions sampler{.temperature = 0.8f, .top_k = 40, .top_p = 0.9f, .seed = 3};
  const std::vector<int32_t> bytes =
      session.Generate(std::vector<int32_t>(prompt.begin(), prompt.end()), 24, sampler);
  const std::string expected(bytes.begin(), bytes.end());

  // llama.cpp's names, the long names, and the model as -m / --model or as MODEL.
  EXPECT_EQ(Ok({"generate", "-m", m, "-p", prompt, "-n", "24", "--temp", "0.8", "--top-k", "40",
                "--top-p", "0.9", "-s", "3", "-t", "1", "--raw"}),
            expected);
  EXPECT_EQ(
      Ok({"generate", "--model", m, "--prompt", prompt, "--max-new-tokens", "24", "--temperature",
          "0.8", "--top-k", "40", "--top-p", "0.9", "--seed", "3", "--threads", "1", "--raw"}),
      expected);
  EXPECT_EQ(Ok({"generate", m, "-p", prompt, "-n", "24", "--temp", "0.8", "--top-k", "40",
                "--top-p", "0.9", "-s", "3", "-t", "1", "--raw"}),
            expected);

  // The model twice or not at all, two prompts: malformed.
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"generate", m, "-m", m, "-p", "x"},
        {"generate", "-p", "x"},
        {"generate", m, "-p", "x", "-f", Path("p.txt")},
        {"generate", m, "-p", "x", "--prompt-tokens", "1"},
        {"generate", m, "-f", Path("p.txt"), "--prompt-tokens", "1"}}) {
    const Result r = Titans(args);
    EXPECT_EQ(r.status, 2) << r;
    EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << r;
  }

  // -t for the other commands' threads.
  WriteTokens(Path("in.safetensors"), {1, 2, 3}, io::DType::kI32);
  Ok({"forward", m, "--input", Path("in.safetensors"), "--output", Path("o.safetensors"), "-t",
      "1"});
}

TEST_F(CliTest, GenerateReadsThePromptFromAFileOrStandardInput) {
  const std::string m = Path("m.safetensors");
  Ok({"make-model", m, "--seed", "2"});
  const std::string prompt = "A prompt\nover two lines, with \xce\xbc and a backslash \\";
  std::ofstream(Path("prompt.txt"), std::ios::binary) << prompt;
  const std::vector<std::string> options = {"-n", "40", "--temp", "1", "-s", "5", "-t", "1"};
  const auto run = [&](std::vector<std::string> args, const std::string& input = "") {
    args.insert(args.begin(), {"generate", m});
    args.insert(args.end(), options.begin(), options.end());
    const Result r = Titans(args, input);
    EXPECT_EQ(r.status, 0) << r;
    return r.out;
  };
  const std::string expected = run({"-p", prompt});
  EXPECT_FALSE(expected.empty());
  EXPECT_EQ(run({"-f", Path("prompt.txt")}), expected);
  EXPECT_EQ(run({"--file", Path("prompt.txt")}), expected);
  EXPECT_EQ(run({"-f", "-"}, Path("prompt.txt")), expected);        // piped into the process
  EXPECT_EQ(run({"--prompt", "-"}, Path("prompt.txt")), expected);  // the same
  EXPECT_EQ(run({"-p", "-"}, Path("prompt.txt")), expected);

  std::ofstream(Path("empty.txt")) << "";
  const Result empty = Titans({"generate", m, "-f", "-"}, Path("empty.txt"));
  EXPECT_EQ(empty.status, 1) << empty;
  EXPECT_NE(empty.err.find("the prompt is empty"), std::string::npos) << empty;
  ExpectError({"generate", m, "-f", Path("empty.txt")}, "the prompt is empty");
  ExpectError({"generate", m, "-f", Path("missing.txt")}, "missing.txt");
  ExpectError({"generate", m, "-f", dir_.string()}, "is a directory");
  Ok({"make-model", Path("v48.safetensors"), "--vocab", "48", "--d-model", "32"});
  ExpectError({"generate", Path("v48.safetensors"), "-f", Path("prompt.txt")}, "vocab_size 256");
}

// Starts `titans args` with its standard output on a pipe, reads until the first bytes arrive,
// notes whether the process is still running then, and kills it. A program that streams writes
// its first token long before it could finish 10^8 of them (and it would block on the full
// pipe after 64 KiB anyway); one that prints at the end shows nothing for hours, which the poll
// below turns into a failure after `patience_s` (a guard, never reached by a working program).
struct FirstOutput {
  std::string bytes;
  bool running = false;  // the process had not ended when they arrived
};
FirstOutput ReadFirstOutput(const std::vector<std::string>& args, const std::string& err_path,
                            int patience_s = 300) {
  // Everything the child needs is prepared before fork (only async-signal-safe calls after it).
  std::vector<std::string> storage = args;
  std::vector<char*> argv = {const_cast<char*>(kCli)};
  for (std::string& a : storage) argv.push_back(a.data());
  argv.push_back(nullptr);
  int fds[2];
  if (pipe(fds) != 0) return {};
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]);
    close(fds[1]);
    const int err = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (err >= 0) dup2(err, STDERR_FILENO);
    execv(kCli, argv.data());
    _exit(127);
  }
  close(fds[1]);
  FirstOutput first;
  if (pid < 0) {
    close(fds[0]);
    return first;
  }
  pollfd p{fds[0], POLLIN, 0};
  while (first.bytes.empty() && poll(&p, 1, patience_s * 1000) > 0) {
    char buffer[4096];
    const ssize_t n = read(fds[0], buffer, sizeof buffer);
    if (n <= 0) break;  // the end of the output: the process ended without writing
    first.bytes.append(buffer, static_cast<size_t>(n));
  }
  int status = 0;
  first.running = waitpid(pid, &status, WNOHANG) == 0;
  kill(pid, SIGKILL);
  close(fds[0]);
  waitpid(pid, &status, 0);
  return first;
}

TEST_F(CliTest, GenerateStreamsTokensAsTheyAreMade) {
  const std::string m = Path("m.safetensors");
  Ok({"make-model", m, "--seed", "3"});
  const auto model = Model::Load(m);
  const std::string prompt = "Stream: ";
  const std::vector<int32_t> prompt_tokens(prompt.begin(), prompt.end());
  Session session(model, SessionOptions{1});
  const SamplerOptions sampler{.temperature = 1.0f, .seed = 11};
  const std::vector<int32_t> made = session.Generate(prompt_tokens, 256, sampler);
  const std::string expected(made.begin(), made.end());

  // Text: the first bytes arrive while the process still has almost all of 10^8 tokens to make,
  // and they are the continuation's first bytes.
  const FirstOutput text = ReadFirstOutput({"generate", m, "-p", prompt, "-n", "100000000",
                                            "--temp", "1", "-s", "11", "-t", "1", "--raw"},
                                           Path("text_err.txt"));
  ASSERT_FALSE(text.bytes.empty()) << ReadFile(Path("text_err.txt"));
  EXPECT_TRUE(text.running) << "the first bytes came only when the process had ended";
  const size_t compared = std::min(text.bytes.size(), expected.size() - 4);
  EXPECT_EQ(text.bytes.substr(0, compared), expected.substr(0, compared));

  // Token ids: the same.
  const FirstOutput ids = ReadFirstOutput({"generate", m, "--prompt-tokens", Join(prompt_tokens),
                                           "-n", "100000000", "--temp", "1", "-s", "11", "-t", "1"},
                                          Path("ids_err.txt"));
  ASSERT_FALSE(ids.bytes.empty()) << ReadFile(Path("ids_err.txt"));
  EXPECT_TRUE(ids.running) << "the first ids came only when the process had ended";
  const std::string all_ids = Join(made);
  const size_t n = std::min(ids.bytes.size(), all_ids.size());
  EXPECT_EQ(ids.bytes.substr(0, n), all_ids.substr(0, n));

  // --stats: the timings, on stderr, at the end; stdout holds only the text.
  const Result stats = Titans({"generate", m, "-p", prompt, "-n", "20", "--temp", "1", "-s", "11",
                               "-t", "1", "--raw", "--stats"});
  EXPECT_EQ(stats.status, 0) << stats;
  EXPECT_EQ(stats.out, expected.substr(0, 20));
  for (const char* line :
       {"load: ", "prompt: 8 tokens in ", "generation: 20 tokens in ", "the first "}) {
    EXPECT_NE(stats.err.find(line), std::string::npos) << line << "\n" << stats;
  }
}

// Bytes of `text` from `at` on, `length` of them without a NUL (an argument cannot hold one).
std::string PieceWithoutNul(const std::string& text, size_t at, size_t length) {
  for (; at + length <= text.size(); ++at) {
    const std::string piece = text.substr(at, length);
    if (piece.find('\0') == std::string::npos) return piece;
  }
  return "";
}

TEST_F(CliTest, GenerateStopsAtAStopStringAndPenalizesRepeats) {
  const std::string m = Path("m.safetensors");
  Ok({"make-model", m, "--seed", "8"});
  const auto model = Model::Load(m);
  const std::string prompt = "Stop here: ";
  const std::vector<int32_t> prompt_tokens(prompt.begin(), prompt.end());
  Session session(model, SessionOptions{1});
  const SamplerOptions sampler{.temperature = 1.0f, .seed = 2};
  const std::vector<int32_t> made = session.Generate(prompt_tokens, 300, sampler);
  const std::string all(made.begin(), made.end());
  const std::vector<std::string> sampling = {"-n", "300", "--temp", "1", "-s", "2", "-t", "1"};

  // Two stop strings: generation ends where the output first ends with either; the stop string
  // is written.
  const std::string stop_a = PieceWithoutNul(all, 150, 3), stop_b = PieceWithoutNul(all, 220, 2);
  ASSERT_FALSE(stop_a.empty());
  ASSERT_FALSE(stop_b.empty());
  const size_t end = std::min(all.find(stop_a) + 3, all.find(stop_b) + 2);
  std::vector<std::string> args = {"generate", m,        "-p",   prompt,  "--stop",
                                   stop_a,     "--stop", stop_b, "--raw", "--stats"};
  args.insert(args.end(), sampling.begin(), sampling.end());
  const Result r = Titans(args);
  EXPECT_EQ(r.status, 0) << r;
  EXPECT_EQ(r.out, all.substr(0, end));
  EXPECT_NE(r.err.find("generation: " + std::to_string(end) + " tokens"), std::string::npos) << r;
  EXPECT_NE(r.err.find("stopped by --stop"), std::string::npos) << r;
  // A stop string that never comes: all 300 tokens.
  args = {"generate", m, "-p", prompt, "--stop", "never said", "--raw"};
  args.insert(args.end(), sampling.begin(), sampling.end());
  EXPECT_EQ(Ok(args), all);
  for (const std::vector<std::string>& bad :
       {std::vector<std::string>{"generate", m, "-p", prompt, "--stop", ""},
        {"generate", m, "--prompt-tokens", "1,2", "--stop", "x"}}) {
    const Result b = Titans(bad);
    EXPECT_EQ(b.status, 2) << b;
  }

  // --repeat-penalty P over the last N tokens (prompt included), as llama.cpp: positive logits
  // of those tokens divided by P, the others multiplied by it, before sampling.
  const auto reference = [&](float penalty, int last_n, const SamplerOptions& s, int count) {
    Session ref(model, SessionOptions{1});
    std::vector<int32_t> history = prompt_tokens;
    std::vector<float> logits(prompt_tokens.size() * 256);
    ref.Forward(prompt_tokens, logits);
    std::vector<float> last(logits.end() - 256, logits.end());
    std::mt19937_64 rng(s.seed);
    std::vector<int32_t> out;
    for (int i = 0; i < count; ++i) {
      const size_t from = history.size() > static_cast<size_t>(last_n)
                              ? history.size() - static_cast<size_t>(last_n)
                              : 0;
      std::vector<bool> seen(256, false);
      for (size_t k = from; k < history.size(); ++k) seen[static_cast<size_t>(history[k])] = true;
      for (size_t t = 0; t < 256; ++t) {
        if (seen[t]) last[t] = last[t] <= 0 ? last[t] * penalty : last[t] / penalty;
      }
      const int32_t token = SampleToken(last, s, rng);
      out.push_back(token);
      history.push_back(token);
      ref.Forward(std::span<const int32_t>(&token, 1), last);
    }
    return out;
  };
  const SamplerOptions greedy;
  const std::vector<int32_t> penalized = reference(1.5f, 16, greedy, 60);
  EXPECT_EQ(Ok({"generate", m, "--prompt-tokens", Join(prompt_tokens), "-n", "60", "-t", "1",
                "--repeat-penalty", "1.5", "--repeat-last-n", "16"}),
            Join(penalized) + "\n");
  const std::vector<int32_t> plain =
      Session(model, SessionOptions{1}).Generate(prompt_tokens, 60, greedy);
  EXPECT_NE(penalized, plain);  // the penalty changes what a random model repeats
  EXPECT_EQ(Ok({"generate", m, "--prompt-tokens", Join(prompt_tokens), "-n", "60", "-t", "1",
                "--repeat-penalty", "1"}),
            Join(plain) + "\n");
  // Sampled, with the default window of 64.
  const SamplerOptions sampled{.temperature = 0.9f, .top_k = 50, .seed = 6};
  EXPECT_EQ(Ok({"generate", m, "--prompt-tokens", Join(prompt_tokens), "-n", "80", "-t", "1",
                "--temp", "0.9", "--top-k", "50", "-s", "6", "--repeat-penalty", "1.3"}),
            Join(reference(1.3f, 64, sampled, 80)) + "\n");
}

// A copy of a safetensors file with the I64 scalar `name` set to `value`.
void CopyWithScalar(const std::string& from, const std::string& to, const std::string& name,
                    int64_t value) {
  const io::SafetensorsFile file = io::SafetensorsFile::Open(from);
  std::vector<io::TensorToWrite> tensors;
  for (const io::TensorRecord& t : file.tensors()) {
    tensors.push_back({t.name, t.dtype, t.shape,
                       t.name == name ? static_cast<const void*>(&value) : t.bytes.data()});
  }
  io::WriteSafetensors(to, file.metadata(), tensors);
}

TEST_F(CliTest, InfoDescribesEveryFileTheEngineWrites) {
  // A model.
  const std::string m = Path("m.safetensors");
  Ok({"make-model", m, "--kind", "mixed", "--layers", "5", "--window", "8", "--chunk", "4",
      "--seed", "2"});
  const ModelConfig config = Model::Load(m)->config();
  EXPECT_NE(Ok({"info", m}).find("format: titans.model version 1"), std::string::npos);

  // A session state after 150 tokens: the model config, the position, per layer the memory's
  // state and the attention cache, the tensors.
  std::vector<int64_t> tokens(150);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int64_t>(i * 7 % 256);
  WriteTokens(Path("in.safetensors"), tokens, io::DType::kI32);
  Ok({"forward", m, "--input", Path("in.safetensors"), "--output", Path("out.safetensors"),
      "--save-state", Path("session.safetensors"), "-t", "1"});
  const std::string session = Ok({"info", Path("session.safetensors")});
  for (const char* s : {"format: titans.session version 1", "position: 150 tokens",
                        "layers: lmm,mal,mag,mac,attention", "\"window\": 8",
                        "tensors: ", "\nlayers.0.memory.w_cur.0 ", "\nlayers.4.attention.keys "}) {
    EXPECT_NE(session.find(s), std::string::npos) << s << " in\n" << session;
  }
  const io::SafetensorsFile state = io::SafetensorsFile::Open(Path("session.safetensors"));
  for (size_t l = 0; l < config.layers.size(); ++l) {
    const std::string prefix = "layers." + std::to_string(l) + ".";
    std::string expected = "layer " + std::to_string(l) + " (" + ToString(config.layers[l]) + "):";
    if (config.layers[l] != BlockKind::kAttention) {
      int64_t values = 0, bytes = 0;
      for (const io::TensorRecord& t : state.tensors()) {
        if (t.name.rfind(prefix + "memory.", 0) != 0) continue;
        int64_t n = 1;
        for (int64_t d : t.shape) n *= d;
        values += n;
        bytes += static_cast<int64_t>(t.bytes.size());
      }
      expected += " memory state " + std::to_string(values) + " values (" + std::to_string(bytes) +
                  " bytes), position 150, 2 tokens pending";  // 150 % 4
    }
    if (config.layers[l] != BlockKind::kLmm) {
      const io::TensorRecord* keys = state.Find(prefix + "attention.keys");
      ASSERT_NE(keys, nullptr);
      expected += std::string(config.layers[l] == BlockKind::kAttention ? " " : "; ") +
                  "attention cache " + std::to_string(keys->shape[0]) + " rows of " +
                  std::to_string(keys->shape[1]) + " keys and values (" +
                  std::to_string(2 * keys->bytes.size()) + " bytes), position ";
      if (config.layers[l] == BlockKind::kAttention) {
        EXPECT_EQ(keys->shape[0], 8);  // the window
      }
      // (a MAC cache holds the interleaved rows of its segment: its own position)
      if (config.layers[l] != BlockKind::kMac) expected += "150";
    }
    EXPECT_NE(session.find(expected), std::string::npos) << expected << " in\n" << session;
  }
  EXPECT_EQ(ModelConfig::FromJson(Ok({"info", Path("session.safetensors"), "--config-only"})),
            config);
  // It checks the state as Session::Load does: a memory position that disagrees is refused.
  CopyWithScalar(Path("session.safetensors"), Path("bad_session.safetensors"),
                 "layers.0.memory.position", 149);
  ExpectError({"info", Path("bad_session.safetensors")}, "bad_session.safetensors");

  // Memory weights and a memory state.
  const MemoryConfig mc = MemoryConfig::Paper(32, 2, 16, 2, 8);
  const auto memory = std::make_shared<const NeuralMemory>(mc, MemoryWeights::Random(mc, 5));
  memory->Save(Path("memory.safetensors"));
  const std::string weights = Ok({"info", Path("memory.safetensors")});
  int64_t parameters = 0;
  for (const ConstTensorView& t : memory->weights().Tensors(mc)) {
    EXPECT_NE(weights.find("\n" + t.name + " "), std::string::npos) << t.name << "\n" << weights;
    parameters += t.size();
  }
  for (const std::string& s : {std::string("format: titans.memory version 1"),
                               std::string("memory: 2 heads x 16, MLP depth 2, unit 8 tokens"),
                               "total: " + std::to_string(parameters) + " parameters"}) {
    EXPECT_NE(weights.find(s), std::string::npos) << s << " in\n" << weights;
  }
  EXPECT_EQ(MemoryConfig::FromJson(Ok({"info", Path("memory.safetensors"), "--config-only"})), mc);

  MemorySession stream(memory, SessionOptions{1});
  std::vector<float> x(21 * 32), y(21 * static_cast<size_t>(memory->output_width()));
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.1f * static_cast<float>(i));
  stream.Forward(x, y);
  stream.Save(Path("memory_state.safetensors"));
  const std::string memory_state = Ok({"info", Path("memory_state.safetensors")});
  for (const char* s :
       {"format: titans.memory_state version 1", "position: 21 tokens, 5 of them pending",
        "\nw_cur.0 ", "\npending_k ", "memory: 2 heads x 16"}) {
    EXPECT_NE(memory_state.find(s), std::string::npos) << s << " in\n" << memory_state;
  }
  EXPECT_EQ(MemoryConfig::FromJson(Ok({"info", Path("memory_state.safetensors"), "--config-only"})),
            mc);
  CopyWithScalar(Path("memory_state.safetensors"), Path("bad_state.safetensors"), "pending", 4);
  ExpectError({"info", Path("bad_state.safetensors")}, "bad_state.safetensors");

  // The outputs of titans forward.
  const std::string out = Ok({"info", Path("out.safetensors")});
  for (const char* s : {"format: titans.forward version 1", "input: tokens", "\nlogits "}) {
    EXPECT_NE(out.find(s), std::string::npos) << s << " in\n" << out;
  }

  // Anything else: status 1, naming the format.
  const float f = 1;
  io::WriteSafetensors(Path("other.safetensors"), {{"format", "something.else"}},
                       {{"x", io::DType::kF32, {1}, &f}});
  ExpectError({"info", Path("other.safetensors")}, "format \"something.else\"");
  io::WriteSafetensors(Path("plain.safetensors"), {}, {{"x", io::DType::kF32, {1}, &f}});
  ExpectError({"info", Path("plain.safetensors")}, "no \"format\"");
}

// ---------------------------------------------------------------------------------------------
// bf16 weights: convert-weights, --weights of every command that runs or describes a model.

// Values of every tensor of a model, and of those a kBf16 model stores as bf16 (IsBf16Candidate).
struct Values {
  int64_t all = 0, bf16 = 0;
};
Values ValuesOf(const Model& model) {
  Values n;
  for (const ConstTensorView& t : model.weights().Tensors(model.config())) {
    n.all += t.size();
    if (IsBf16Candidate(t.name)) n.bf16 += t.size();
  }
  return n;
}

TEST_F(CliTest, ConvertWeightsRoundTripsAndInfoShowsTheWeights) {
  const std::string f32 = Path("f32.safetensors"), bf16 = Path("bf16.safetensors");
  const std::string back = Path("back.safetensors");
  Ok({"make-model", f32, "--kind", "mixed", "--window", "8", "--chunk", "4", "--seed", "2"});
  const auto f32_size = static_cast<int64_t>(std::filesystem::file_size(f32));
  const std::string wrote = Ok({"convert-weights", f32, bf16, "--to", "bf16"});
  EXPECT_EQ(wrote, "wrote " + bf16 + ": bf16 weights, " +
                       std::to_string(std::filesystem::file_size(bf16)) + " bytes (from " + f32 +
                       ": f32 weights, " + std::to_string(f32_size) + " bytes)\n");
  const auto original = Model::Load(f32), converted = Model::Load(bf16);
  EXPECT_EQ(original->weight_type(), WeightType::kF32);
  EXPECT_EQ(converted->weight_type(), WeightType::kBf16);
  // Half the bytes of every product matrix, give or take the header (dtype names, padding).
  const int64_t saved = f32_size - static_cast<int64_t>(std::filesystem::file_size(bf16));
  const Values values = ValuesOf(*original);
  EXPECT_GT(values.bf16, values.all / 2);
  EXPECT_NEAR(static_cast<double>(saved), 2.0 * static_cast<double>(values.bf16), 2048);
  // The library's conversion, byte for byte: make-model --weights bf16 writes the same file.
  Ok({"make-model", Path("made.safetensors"), "--kind", "mixed", "--window", "8", "--chunk", "4",
      "--seed", "2", "--weights", "bf16"});
  EXPECT_EQ(ReadFile(Path("made.safetensors")), ReadFile(bf16));

  // Back to f32: the rounded values, as f32 tensors (the size of the original file).
  EXPECT_NE(Ok({"convert-weights", bf16, back, "--to", "f32"}).find(": f32 weights, "),
            std::string::npos);
  EXPECT_EQ(static_cast<int64_t>(std::filesystem::file_size(back)), f32_size);
  const auto widened = Model::Load(back);
  EXPECT_EQ(widened->weight_type(), WeightType::kF32);
  EXPECT_EQ(widened->weights().layers[1].ffn_up, converted->weights().layers[1].ffn_up);
  EXPECT_NE(widened->weights().layers[1].ffn_up, original->weights().layers[1].ffn_up);

  // info: the weight type and its bytes, the BF16 tensors in the table.
  const std::string info = Ok({"info", bf16});
  char mib[64];
  std::snprintf(mib, sizeof mib, "%.2f MiB",
                static_cast<double>(4 * values.all - 2 * values.bf16) / (1 << 20));
  EXPECT_NE(info.find("\nweights: bf16 (product matrices), " + std::string(mib) + "\n"),
            std::string::npos)
      << mib << "\n"
      << info;
  const std::regex bf16_row(R"(\nlayers\.1\.ffn_up +BF16 )"), f32_row(R"(\nfinal_norm +F32 )");
  EXPECT_TRUE(std::regex_search(info, bf16_row)) << info;
  EXPECT_TRUE(std::regex_search(info, f32_row)) << info;
  std::snprintf(mib, sizeof mib, "%.2f MiB", static_cast<double>(4 * values.all) / (1 << 20));
  const std::string f32_info = Ok({"info", f32, "--weights", "bf16"});
  EXPECT_NE(f32_info.find("\nweights: f32, " + std::string(mib) + "\n" +
                          "with --weights bf16: bf16 (product matrices), "),
            std::string::npos)
      << f32_info;
  EXPECT_EQ(Ok({"info", f32, "--weights", "f32"}), Ok({"info", f32}));  // as it is: no extra line
  EXPECT_EQ(ModelConfig::FromJson(Ok({"info", bf16, "--config-only"})), original->config());

  // Errors: OUT must not be IN, --to is required and checked, IN must be a model.
  const std::string before = ReadFile(f32);
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"convert-weights", f32, f32, "--to", "bf16"},
        {"convert-weights", f32, Path("x.safetensors")},
        {"convert-weights", f32, Path("x.safetensors"), "--to", "fp16"}}) {
    const Result r = Titans(args);
    EXPECT_EQ(r.status, 2) << r;
    EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << r;
  }
  EXPECT_EQ(ReadFile(f32), before);
  ExpectError({"convert-weights", Path("none.safetensors"), Path("x.safetensors"), "--to", "bf16"},
              "none.safetensors");
  EXPECT_FALSE(std::filesystem::exists(Path("x.safetensors")));
}

TEST_F(CliTest, WeightsBf16RunsAsTheConvertedFile) {
  const std::string f32 = Path("f32.safetensors"), bf16 = Path("bf16.safetensors");
  Ok({"make-model", f32, "--kind", "mixed", "--window", "8", "--chunk", "4", "--seed", "5"});
  Ok({"convert-weights", f32, bf16, "--to", "bf16"});
  const int64_t n = 70, vocab = 256;
  std::vector<int64_t> tokens(n);
  for (int64_t i = 0; i < n; ++i) tokens[static_cast<size_t>(i)] = (i * 37 + 11) % vocab;
  WriteTokens(Path("in.safetensors"), tokens, io::DType::kI32);
  const auto forward = [&](const std::string& model, std::vector<std::string> extra) {
    std::vector<std::string> args = {
        "forward",   model, "--input", Path("in.safetensors"), "--output", Path("out.safetensors"),
        "--threads", "1"};
    args.insert(args.end(), extra.begin(), extra.end());
    Ok(args);
    return ReadOutput(Path("out.safetensors"), "logits", {n, vocab});
  };

  // forward: the f32 file run with --weights bf16 is the bf16 file, bit for bit; the bf16 file
  // is what the library computes with it; the bf16 logits are near the f32 ones, not equal.
  const std::vector<float> converted = forward(bf16, {});
  EXPECT_EQ(forward(f32, {"--weights", "bf16"}), converted);
  EXPECT_EQ(forward(bf16, {"--weights", "bf16"}), converted);
  Session session(Model::Load(bf16), SessionOptions{1});
  const std::vector<int32_t> narrow(tokens.begin(), tokens.end());
  std::vector<float> expected(static_cast<size_t>(n * vocab));
  session.Forward(narrow, expected);
  EXPECT_EQ(converted, expected);
  const std::vector<float> original = forward(f32, {});
  EXPECT_NE(converted, original);
  EXPECT_LE(RelativeError(converted, original), 0.05);
  // --weights f32 on the bf16 file: an f32 model of the rounded values, the same logits up to
  // the order of the sums.
  EXPECT_LE(RelativeError(forward(bf16, {"--weights", "f32"}), converted), 1e-5);

  // generate, token ids and text: the same output.
  const std::vector<std::string> ids = {"--prompt-tokens", "5,6,7,200,31", "-n", "24", "-t", "1"};
  const std::vector<std::string> text = {"-p",  "The memory", "-n", "40", "--temp",
                                         "0.8", "-s",         "3",  "-t", "1"};
  for (const auto& options : {ids, text}) {
    std::vector<std::string> from_f32 = {"generate", f32, "--weights", "bf16"};
    std::vector<std::string> from_bf16 = {"generate", bf16};
    from_f32.insert(from_f32.end(), options.begin(), options.end());
    from_bf16.insert(from_bf16.end(), options.begin(), options.end());
    const std::string out = Ok(from_bf16);
    EXPECT_FALSE(out.empty());
    EXPECT_EQ(Ok(from_f32), out);
  }
  const Result stats =
      Titans({"generate", f32, "--weights", "bf16", "--prompt-tokens", "1", "-n", "2", "--stats"});
  EXPECT_EQ(stats.status, 0) << stats;
  EXPECT_NE(stats.err.find("(bf16 weights)"), std::string::npos) << stats;

  // eval: the records name the weights.
  std::string prose;
  while (prose.size() < 300) prose += "the memory learns at test time. ";
  std::ofstream(Path("text.txt"), std::ios::binary) << prose;
  const std::string out = Ok({"eval", f32, Path("text.txt"), "--weights", "bf16", "--threads", "1",
                              "--json", Path("e.json")});
  EXPECT_NE(out.find(", bf16 weights)"), std::string::npos) << out;
  for (const auto& r : nlohmann::json::parse(ReadFile(Path("e.json")))) {
    EXPECT_EQ(r.at("weights"), "bf16") << r;
  }
}

TEST_F(CliTest, WeightsOfTheBenchAndNiahModels) {
  // The decode row's bytes: a bf16 model's product matrices count 2 bytes a value.
  const auto f32 = bench::MakeBenchModel(bench::kLmm);
  const Model bf16(f32->config(), f32->weights(), WeightType::kBf16);
  const bench::DecodeBytes f32_bytes = bench::DecodeBytesAt(*f32, 3);
  const bench::DecodeBytes bf16_bytes = bench::DecodeBytesAt(bf16, 3);
  EXPECT_DOUBLE_EQ(bf16_bytes.weights,
                   f32_bytes.weights - 2.0 * static_cast<double>(ValuesOf(*f32).bf16));
  EXPECT_DOUBLE_EQ(bf16_bytes.per_stream, f32_bytes.per_stream);
  // ... and the row bench prints (one stream, 4 steps after an empty prompt: position 3).
  const std::string out = Ok({"bench", "--batch", "1", "--kinds", "lmm", "--steps", "4",
                              "--threads", "1", "--weights", "bf16"});
  EXPECT_NE(out.find(", bf16 weights, 1 thread:"), std::string::npos) << out;
  char mib[32];
  std::snprintf(mib, sizeof mib, "%.2f", bf16_bytes.per_token(1) / (1 << 20));
  const std::regex row(R"(lmm +1 +[0-9]+ +[0-9.]+x +([0-9.]+) )");
  std::smatch match;
  ASSERT_TRUE(std::regex_search(out, match, row)) << out;
  EXPECT_EQ(match[1].str(), mib) << out;

  // The prefill points: the weights in the first line, every JSON record and the plot's title.
  const std::string prefill =
      Ok({"bench", "--contexts", "128", "--kinds", "lmm", "--threads", "1", "--weights", "bf16",
          "--json", Path("bench.json"), "--plot", Path("bench.svg")});
  EXPECT_NE(prefill.find(", bf16 weights, 1 thread\n"), std::string::npos) << prefill;
  const auto records = nlohmann::json::parse(ReadFile(Path("bench.json")));
  ASSERT_EQ(records.size(), 1u) << records.dump(2);
  EXPECT_EQ(records[0].at("weights"), "bf16");
  EXPECT_EQ(records[0].at("status"), "ok");
  EXPECT_NE(ReadFile(Path("bench.svg")).find("d_model 256, bf16 weights, 1 thread)"),
            std::string::npos);

  // niah: the constructed model and its baselines with bf16 weights still recall the needle.
  Ok({"niah", "--lengths", "1K", "--depths", "0,100", "--trials", "1", "--threads", "1",
      "--baseline", "--full-max", "1K", "--weights", "bf16", "--json", Path("niah.json")});
  const auto cells = nlohmann::json::parse(ReadFile(Path("niah.json")));
  ASSERT_EQ(cells.size(), 6u) << cells.dump(2);
  for (const auto& r : cells) {
    EXPECT_EQ(r.at("weights"), "bf16") << r;
    const double expected = r.at("model") == "writes_off" && r.at("depth") == 0 ? 0.0 : 1.0;
    EXPECT_EQ(r.at("accuracy").get<double>(), expected) << r;
  }
}

// The lines of `bf16 vs f32 logits (LABEL, N tokens): relative X, max abs Y, top-1 agreement Z%`
// in `out`, each checked to hold numbers in a plausible range for bf16 rounding: LABEL -> N.
std::map<std::string, int64_t> Bf16DifferenceLines(const std::string& out) {
  const std::regex line(
      R"(bf16 vs f32 logits \(([^,]+), ([0-9]+) tokens\): relative (\S+), max abs (\S+), top-1 )"
      R"(agreement (\S+)%\n)");
  std::map<std::string, int64_t> found;
  for (auto m = std::sregex_iterator(out.begin(), out.end(), line); m != std::sregex_iterator();
       ++m) {
    const std::smatch& match = *m;
    const double relative = std::stod(match[3]), max_abs = std::stod(match[4]);
    const double agreement = std::stod(match[5]);
    EXPECT_GT(relative, 0) << match[0];  // the rounding moves the logits, a little
    EXPECT_LT(relative, 0.1) << match[0];
    EXPECT_GT(max_abs, 0) << match[0];
    EXPECT_GE(agreement, 0) << match[0];
    EXPECT_LE(agreement, 100) << match[0];
    found[match[1]] = std::stoll(match[2]);
  }
  return found;
}

TEST_F(CliTest, Bf16LogitDifferenceOfTheBenchAndNiahModels) {
  // bench --batch: a line per kind after the table, over 1024 tokens of the bench stream.
  const std::vector<std::string> batch = {
      "bench", "--batch", "1", "--kinds", "lmm,attention,lmm", "--steps", "2", "--threads", "1"};
  std::vector<std::string> bf16 = batch;
  bf16.insert(bf16.end(), {"--weights", "bf16"});
  const std::string out = Ok(bf16);
  const std::map<std::string, int64_t> kinds = {{"lmm", 1024}, {"attention", 1024}};
  EXPECT_EQ(Bf16DifferenceLines(out), kinds) << out;
  EXPECT_GT(out.find("bf16 vs f32"), out.rfind("prefill")) << out;
  for (const char* weights : {"", "f32"}) {  // unset, the bench models are f32
    std::vector<std::string> args = batch;
    if (*weights != '\0') args.insert(args.end(), {"--weights", weights});
    const std::string f32 = Ok(args);
    EXPECT_EQ(f32.find("bf16 vs f32"), std::string::npos) << f32;
  }

  // bench's prefill points: the line, and the kind's figures on each of its JSON records.
  // (Pieces of 64: the GEMM baseline of each point is then small.)
  const std::string prefill =
      Ok({"bench", "--contexts", "64,128", "--kinds", "lmm", "--threads", "1", "--piece", "64",
          "--weights", "bf16", "--json", Path("bench.json")});
  EXPECT_EQ(Bf16DifferenceLines(prefill), (std::map<std::string, int64_t>{{"lmm", 1024}}))
      << prefill;
  const auto records = nlohmann::json::parse(ReadFile(Path("bench.json")));
  ASSERT_EQ(records.size(), 2u) << records.dump(2);
  for (const auto& r : records) {
    const auto& d = r.at("bf16_vs_f32");
    EXPECT_EQ(d.at("tokens"), 1024) << r;
    EXPECT_GT(d.at("relative").get<double>(), 0) << r;
    EXPECT_LT(d.at("relative").get<double>(), 0.1) << r;
    EXPECT_GT(d.at("max_abs").get<double>(), 0) << r;
    EXPECT_GE(d.at("top1_agreement").get<double>(), 0) << r;
    EXPECT_LE(d.at("top1_agreement").get<double>(), 1) << r;
    EXPECT_EQ(d, records[0].at("bf16_vs_f32"));
  }
  Ok({"bench", "--contexts", "64", "--kinds", "lmm", "--threads", "1", "--piece", "64", "--json",
      Path("f32.json")});
  EXPECT_FALSE(nlohmann::json::parse(ReadFile(Path("f32.json")))[0].contains("bf16_vs_f32"));

  // niah: the model run against its f32 form over the context of the shortest length's first
  // trial; the constructed model, and a model file converted by --weights bf16.
  const std::vector<std::string> niah = {"niah",     "--lengths", "2K,1K",     "--depths", "50",
                                         "--trials", "1",         "--threads", "1"};
  std::vector<std::string> niah_bf16 = niah;
  niah_bf16.insert(niah_bf16.end(), {"--weights", "bf16"});
  const std::string demo = Ok(niah_bf16);
  EXPECT_EQ(Bf16DifferenceLines(demo),
            (std::map<std::string, int64_t>{{"constructed model", 1024}}))
      << demo;
  EXPECT_EQ(Ok(niah).find("bf16 vs f32"), std::string::npos);
  const std::string f32_file = Path("f32.safetensors"), bf16_file = Path("bf16.safetensors");
  Ok({"make-model", f32_file, "--d-model", "32"});
  Ok({"convert-weights", f32_file, bf16_file, "--to", "bf16"});
  std::vector<std::string> from_file = niah;
  from_file.insert(from_file.end(), {"--model", f32_file, "--weights", "bf16"});
  const std::string converted = Ok(from_file);
  EXPECT_EQ(Bf16DifferenceLines(converted), (std::map<std::string, int64_t>{{f32_file, 1024}}))
      << converted;
  // A file that stores bf16 has no f32 weights to compare with: the line says so.
  from_file = niah;
  from_file.insert(from_file.end(), {"--model", bf16_file});
  const std::string stored = Ok(from_file);
  EXPECT_NE(stored.find("bf16 vs f32 logits (" + bf16_file +
                        "): not measured, the file stores bf16 weights"),
            std::string::npos)
      << stored;
}

TEST_F(CliTest, BadWeightsValuesAreRefused) {
  const std::string m = Path("m.safetensors");
  Ok({"make-model", m, "--d-model", "32"});
  const std::vector<std::vector<std::string>> commands = {
      {"make-model", Path("x.safetensors")},
      {"info", m},
      {"generate", m, "--prompt-tokens", "1"},
      {"forward", m, "--input", m, "--output", Path("x.safetensors")},
      {"bench"},
      {"niah"},
      {"eval", m, m}};
  for (const char* bad : {"fp16", "BF16", ""}) {
    for (std::vector<std::string> args : commands) {
      args.insert(args.end(), {"--weights", bad});
      const Result r = Titans(args);
      EXPECT_EQ(r.status, 2) << r;
      EXPECT_EQ(r.err.rfind("error: --weights: " + std::string(bad) + " not in {f32,bf16}\n", 0),
                0u)
          << r;
    }
  }
  const Result to = Titans({"convert-weights", m, Path("x.safetensors"), "--to", "f16"});
  EXPECT_EQ(to.status, 2) << to;
  EXPECT_EQ(to.err.rfind("error: --to: f16 not in {f32,bf16}\n", 0), 0u) << to;
  EXPECT_FALSE(std::filesystem::exists(Path("x.safetensors")));

  // --weights describes model files only.
  WriteTokens(Path("in.safetensors"), {1, 2, 3}, io::DType::kI32);
  Ok({"forward", m, "--input", Path("in.safetensors"), "--output", Path("out.safetensors"),
      "--save-state", Path("state.safetensors")});
  ExpectError({"info", Path("state.safetensors"), "--weights", "bf16"},
              "--weights is for model files");
}

}  // namespace
}  // namespace titans
