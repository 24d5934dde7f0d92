// The command-line program `titans` (tools/titans_cli.cpp, docs/CLI.md), run as a separate
// process from the build tree: make-model, info, generate (token ids and text), forward whole
// and split, and its errors (status 1 and one `error:` line, never an abort). tools/CMakeLists.txt
// defines TITANS_CLI_PATH for this file; without the CLI (TITANS_BUILD_CLI=OFF) the tests skip.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "io/safetensors.hpp"
#include "svg_check.hpp"
#include "titans/evals/eval.hpp"
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

  Result Titans(const std::vector<std::string>& args) const {
    std::string command = Quote(kCli);
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
  for (const char* sub : {"make-model", "info", "generate", "forward", "bench", "niah", "eval"}) {
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
  Ok({"make-model", path, "--kind", "mixed", "--layers", "4", "--window", "8",
      "--chunk", "4", "--seed", "2"});
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

TEST_F(CliTest, BenchWritesOneRecordPerKindAndContextAndAPlot) {
  const std::string out = Ok({"bench", "--contexts", "256,512", "--kinds", "lmm,full", "--threads",
                              "1", "--json", Path("bench.json"), "--plot", Path("bench.svg")});
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
      const double tokens_per_s = r.at("tokens_per_s"), s_per_token = r.at("s_per_token");
      EXPECT_GT(tokens_per_s, 0) << r;
      EXPECT_NEAR(tokens_per_s * s_per_token, 1.0, 1e-9) << r;
      EXPECT_GT(r.at("last_piece_s_per_token").get<double>(), 0) << r;
      EXPECT_GT(r.at("peak_rss_bytes").get<int64_t>(), 1 << 20) << r;
    }
  }
  const std::string svg = ReadFile(Path("bench.svg"));
  EXPECT_EQ(testing::SvgProblem(svg), "") << svg;
  for (const char* text : {">lmm<", ">full<", ">256<", ">512<", "Peak resident memory"}) {
    EXPECT_NE(svg.find(text), std::string::npos) << text;
  }

  // --max-seconds: the first point stops after its first piece and is recorded as skipped with
  // the reason, and so are the larger contexts of that kind.
  Ok({"bench", "--contexts", "256,512", "--kinds", "lmm", "--threads", "1", "--piece", "64",
      "--max-seconds", "1e-6", "--json", Path("capped.json")});
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

  // An output that cannot be written: status 1 after the run, nothing left behind.
  ExpectError({"bench", "--contexts", "64", "--kinds", "lmm", "--json", Path("no/such/dir.json")},
              "no/such/dir.json");
}

TEST_F(CliTest, NiahRunsTheGridWithBaselinesAndWritesJsonAndHeatmaps) {
  const std::string out =
      Ok({"niah", "--lengths", "1K,2K", "--depths", "0,100", "--trials", "2", "--threads", "1",
          "--baseline", "--full-max", "1K", "--json", Path("niah.json"), "--plot",
          Path("niah.svg")});
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
  for (const char* file : {"niah.svg", "niah_writes_off.svg", "niah_full_attention.svg"}) {
    const std::string svg = ReadFile(Path(file));
    EXPECT_EQ(testing::SvgProblem(svg), "") << file;
    EXPECT_NE(svg.find(">2K<"), std::string::npos) << file;
    EXPECT_NE(svg.find(">100%<"), std::string::npos) << file;
  }
  ExpectError({"niah", "--lengths", "100"}, "cannot hold the needle");
  const Result malformed = Titans({"niah", "--lengths", "4X"});  // a command-line error
  EXPECT_EQ(malformed.status, 2) << malformed;
  EXPECT_NE(malformed.err.find("--lengths"), std::string::npos) << malformed;
  ExpectError({"niah", "--haystack", Path("missing.txt")}, "missing.txt");
  const Result png = Titans({"niah", "--plot", Path("niah.png")});  // SVG only, refused at once
  EXPECT_EQ(png.status, 2) << png;
  EXPECT_NE(png.err.find("*.svg"), std::string::npos) << png;
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
                                             {"eval", model, text, "--plot", Path("e.png")}}) {
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

}  // namespace
}  // namespace titans
