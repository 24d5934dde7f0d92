// Session state files (MemorySession::Save / Load), Clone and Reset: saving mid-stream, loading
// into a new session and continuing equals never stopping, bit for bit (docs/SEMANTICS.md
// section 4, invariant 8); a file for another config, a corrupt file or a missing file throws
// and leaves the session exactly as it was.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <ostream>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "io/safetensors.hpp"
#include "scratch_dir.hpp"
#include "titans/error.hpp"
#include "titans/memory.hpp"
#include "titans/memory_config.hpp"

namespace titans {
namespace {

namespace fs = std::filesystem;

// Tokens before the save (not a multiple of any unit below, so part of a unit is pending) and
// after it (enough to cross unit and commit boundaries).
constexpr int kBefore = 37;
constexpr int kAfter = 29;

std::shared_ptr<const NeuralMemory> MakeMemory(const MemoryConfig& config, uint64_t seed = 7) {
  return std::make_shared<const NeuralMemory>(config, MemoryWeights::Random(config, seed));
}

// [n, d] inputs uniform in [-1, 1].
std::vector<float> RandomInputs(int n, int d, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n) * static_cast<size_t>(d));
  for (float& v : x) v = uniform(rng);
  return x;
}

// Runs `x` [n, d] through the session and returns the outputs [n, output_width].
std::vector<float> RunTokens(MemorySession& session, const std::vector<float>& x) {
  const size_t n = x.size() / static_cast<size_t>(session.memory().input_width());
  std::vector<float> out(n * static_cast<size_t>(session.memory().output_width()));
  session.Forward(x, out);
  return out;
}

// Bit-for-bit equality (also tells -0 from 0 and compares NaNs by payload).
bool SameBits(const float* a, const float* b, int64_t n) {
  return n == 0 || std::memcmp(a, b, static_cast<size_t>(n) * sizeof(float)) == 0;
}
bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && SameBits(a.data(), b.data(), static_cast<int64_t>(a.size()));
}

void ExpectSameState(const MemorySession& a, const MemorySession& b) {
  const MemoryConfig& config = a.memory().config();
  EXPECT_EQ(a.state().position, b.state().position);
  EXPECT_EQ(a.state().pending, b.state().pending);
  const std::vector<ConstTensorView> ta = a.state().Tensors(config);
  const std::vector<ConstTensorView> tb = b.state().Tensors(config);
  ASSERT_EQ(ta.size(), tb.size());
  for (size_t i = 0; i < ta.size(); ++i) {
    ASSERT_EQ(ta[i].name, tb[i].name);
    ASSERT_EQ(ta[i].shape, tb[i].shape) << ta[i].name;
    EXPECT_TRUE(SameBits(ta[i].data, tb[i].data, ta[i].size())) << ta[i].name << " differs";
  }
}

// Continues both sessions with the same tokens: same outputs and same final state, bit for bit.
void ExpectSameContinuation(MemorySession& a, MemorySession& b, uint32_t seed) {
  const std::vector<float> x = RandomInputs(kAfter, a.memory().input_width(), seed);
  EXPECT_TRUE(SameBits(RunTokens(a, x), RunTokens(b, x))) << "outputs differ";
  ExpectSameState(a, b);
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void WriteAll(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Runs `f`, expecting a titans::Error with `code`; returns its message.
std::string ExpectError(ErrorCode code, const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no titans::Error thrown";
  return "";
}

// A temporary directory per test, removed afterwards.
class TempDirTest {
 protected:
  std::string Path(const std::string& name) const { return scratch_.Path(name); }
  std::vector<std::string> Listing() const { return scratch_.Listing(); }

  titans::testing::ScratchDir scratch_{"titans_state_"};
};

// ---------------------------------------------------------------------------------------------
// Round trips, for several configs.

struct ConfigCase {
  std::string name;
  MemoryConfig config;
};
void PrintTo(const ConfigCase& c, std::ostream* os) { *os << c.name; }

MemoryConfig WithoutMomentum(MemoryConfig c) {
  c.momentum = false;
  return c;
}

// Momentum of order 3 with a learned combination: the higher orders' momenta are state too.
MemoryConfig WithMomentumOrders(MemoryConfig c) {
  c.momentum_order = 3;
  c.learned_combine = true;
  c.output = MemoryOutput::kLnResidual;
  return c;
}

// titans-pytorch's other memory models: their tensors (and the SwiGLU gain) are state.
MemoryConfig WithModel(MemoryConfig c, MemoryModel model) {
  c.model = model;
  return c;
}

std::vector<ConfigCase> Configs() {
  return {
      {"paper", MemoryConfig::Paper(16, 2, 8, 2, 16)},
      {"paper_depth1_no_momentum", WithoutMomentum(MemoryConfig::Paper(12, 3, 4, 1, 4))},
      {"paper_depth3_chunk8", MemoryConfig::Paper(8, 1, 8, 3, 8)},
      {"titans_pytorch", MemoryConfig::TitansPytorch(16, 2, 8, 4, 8)},
      {"titans_pytorch_one_head", MemoryConfig::TitansPytorch(8, 1, 8, 3)},
      {"titans_pytorch_momentum_orders",
       WithMomentumOrders(MemoryConfig::TitansPytorch(16, 2, 8, 4, 8))},
      {"titans_pytorch_swiglu",
       WithModel(MemoryConfig::TitansPytorch(16, 2, 8, 4, 8), MemoryModel::kSwiGlu)},
      {"titans_pytorch_gated_residual",
       WithModel(MemoryConfig::TitansPytorch(16, 2, 8, 4, 8), MemoryModel::kGatedResidual)},
  };
}

class StateFileTest : public TempDirTest, public ::testing::TestWithParam<ConfigCase> {
 protected:
  StateFileTest() : memory_(MakeMemory(GetParam().config)) {}
  int d() const { return memory_->input_width(); }

  std::shared_ptr<const NeuralMemory> memory_;
};

TEST_P(StateFileTest, SaveLoadContinueEqualsNeverStopping) {
  MemorySession original(memory_);
  RunTokens(original, RandomInputs(kBefore, d(), 1));
  ASSERT_EQ(original.position(), kBefore);
  // The premise of the test: the save happens with part of a unit pending.
  ASSERT_EQ(original.state().pending, kBefore % memory_->config().unit());
  ASSERT_GT(original.state().pending, 0);

  const std::string path = Path("state.safetensors");
  original.Save(path);
  EXPECT_EQ(Listing(), std::vector<std::string>{"state.safetensors"}) << "temporary files left";

  MemorySession loaded(memory_);
  loaded.Load(path);
  ExpectSameState(original, loaded);
  ExpectSameContinuation(original, loaded, 2);
}

TEST_P(StateFileTest, FreshSessionRoundTrips) {
  MemorySession fresh(memory_);
  fresh.Save(Path("fresh.safetensors"));
  MemorySession used(memory_);
  RunTokens(used, RandomInputs(kBefore, d(), 3));
  used.Load(Path("fresh.safetensors"));
  EXPECT_EQ(used.position(), 0);
  ExpectSameState(fresh, used);
  ExpectSameContinuation(fresh, used, 4);
}

TEST_P(StateFileTest, LoadRewindsTheSession) {
  MemorySession session(memory_);
  RunTokens(session, RandomInputs(kBefore, d(), 5));
  const std::string path = Path("state.safetensors");
  session.Save(path);
  const std::vector<float> next = RandomInputs(kAfter, d(), 6);
  const std::vector<float> first = RunTokens(session, next);
  session.Load(path);
  EXPECT_EQ(session.position(), kBefore);
  EXPECT_TRUE(SameBits(RunTokens(session, next), first));
}

TEST_P(StateFileTest, SavingTwiceReplacesTheFileAndLeavesNoTemporaryFiles) {
  MemorySession session(memory_);
  const std::string path = Path("state.safetensors");
  session.Save(path);
  RunTokens(session, RandomInputs(kBefore, d(), 7));
  session.Save(path);
  EXPECT_EQ(Listing(), std::vector<std::string>{"state.safetensors"});
  MemorySession loaded(memory_);
  loaded.Load(path);
  ExpectSameState(session, loaded);
}

TEST_P(StateFileTest, CloneContinuesBitExactly) {
  MemorySession original(memory_);
  RunTokens(original, RandomInputs(kBefore, d(), 8));
  MemorySession clone = original.Clone();
  ExpectSameState(original, clone);
  ExpectSameContinuation(original, clone, 9);
}

TEST_P(StateFileTest, ResetEqualsAFreshSession) {
  MemorySession session(memory_);
  RunTokens(session, RandomInputs(kBefore, d(), 10));
  session.Reset();
  EXPECT_EQ(session.position(), 0);
  MemorySession fresh(memory_);
  ExpectSameState(session, fresh);
  ExpectSameContinuation(session, fresh, 11);
}

INSTANTIATE_TEST_SUITE_P(Configs, StateFileTest, ::testing::ValuesIn(Configs()),
                         [](const ::testing::TestParamInfo<ConfigCase>& param) {
                           return param.param.name;
                         });

// ---------------------------------------------------------------------------------------------
// Failed loads: the right error, and the session exactly as before.

class StateFileErrorTest : public TempDirTest, public ::testing::Test {
 protected:
  StateFileErrorTest()
      : config_(MemoryConfig::Paper(16, 2, 8, 2, 16)),
        memory_(MakeMemory(config_)),
        session_(memory_),
        good_(Path("good.safetensors")) {
    RunTokens(session_, RandomInputs(kBefore, config_.d_model, 20));
    session_.Save(good_);
    RunTokens(session_, RandomInputs(5, config_.d_model, 21));  // now differs from the file
    before_ = std::make_unique<MemorySession>(session_.Clone());
  }

  // Expects Load(path) to fail with `code` and leave the session as it was; returns the message.
  std::string ExpectLoadFails(const std::string& path, ErrorCode code) {
    const std::string message = ExpectError(code, [&] { session_.Load(path); });
    ExpectSameState(session_, *before_);
    return message;
  }

  struct Tensor {
    std::string name;
    io::DType dtype;
    std::vector<int64_t> shape;
    std::vector<std::byte> bytes;
  };
  // Copies the good file to `name` after `edit` changed its metadata or tensors.
  std::string Rewrite(const std::string& name,
                      const std::function<void(std::map<std::string, std::string>& metadata,
                                               std::vector<Tensor>& tensors)>& edit) {
    std::map<std::string, std::string> metadata;
    std::vector<Tensor> tensors;
    {
      const io::SafetensorsFile file = io::SafetensorsFile::Open(good_);
      metadata = file.metadata();
      for (const io::TensorRecord& t : file.tensors()) {
        tensors.push_back({t.name, t.dtype, t.shape, {t.bytes.begin(), t.bytes.end()}});
      }
    }
    edit(metadata, tensors);
    std::vector<io::TensorToWrite> out;
    for (const Tensor& t : tensors) out.push_back({t.name, t.dtype, t.shape, t.bytes.data()});
    const std::string path = Path(name);
    io::WriteSafetensors(path, metadata, out);
    return path;
  }

  static Tensor& Find(std::vector<Tensor>& tensors, const std::string& name) {
    const auto it = std::find_if(tensors.begin(), tensors.end(),
                                 [&](const Tensor& t) { return t.name == name; });
    if (it == tensors.end()) throw std::logic_error("the state file has no tensor " + name);
    return *it;
  }
  static void SetI64(Tensor& t, int64_t value) { std::memcpy(t.bytes.data(), &value, 8); }
  static void SetF32(Tensor& t, size_t index, float value) {
    std::memcpy(t.bytes.data() + index * sizeof(float), &value, sizeof(float));
  }

  MemoryConfig config_;
  std::shared_ptr<const NeuralMemory> memory_;
  MemorySession session_;
  std::string good_;
  std::unique_ptr<MemorySession> before_;  // a clone of session_ taken before the failed loads
};

TEST_F(StateFileErrorTest, TheGoodFileLoads) {
  MemorySession other(memory_);
  other.Load(good_);
  EXPECT_EQ(other.position(), kBefore);
}

TEST_F(StateFileErrorTest, StateOfAnotherConfigIsAMismatch) {
  struct Variant {
    std::string field;
    MemoryConfig config;
  };
  const std::vector<Variant> variants{
      {"chunk", MemoryConfig::Paper(16, 2, 8, 2, 8)},
      {"heads", MemoryConfig::Paper(16, 4, 4, 2, 16)},
      {"depth", MemoryConfig::Paper(16, 2, 8, 3, 16)},
      {"d_model", MemoryConfig::Paper(32, 2, 8, 2, 16)},
      {"activation", MemoryConfig::TitansPytorch(16, 2, 8, 4, 8)},
  };
  for (const Variant& v : variants) {
    SCOPED_TRACE(v.field);
    const auto other_memory = MakeMemory(v.config);
    MemorySession other(other_memory);
    RunTokens(other, RandomInputs(kBefore, v.config.d_model, 22));
    const std::string path = Path("other_" + v.field + ".safetensors");
    other.Save(path);
    const std::string message = ExpectLoadFails(path, ErrorCode::kMismatch);
    EXPECT_NE(message.find(v.field), std::string::npos) << message;
  }
  ExpectSameContinuation(session_, *before_, 23);
}

TEST_F(StateFileErrorTest, TruncatedFilesAreRejected) {
  const std::string bytes = ReadAll(good_);
  uint64_t header_size = 0;
  std::memcpy(&header_size, bytes.data(), 8);
  const size_t data_start = 8 + static_cast<size_t>(header_size);
  const std::string path = Path("truncated.safetensors");
  for (size_t length : {size_t{0}, size_t{4}, size_t{8}, size_t{9}, data_start - 1, data_start,
                        data_start + 1, bytes.size() / 2, bytes.size() - 1}) {
    SCOPED_TRACE(length);
    WriteAll(path, bytes.substr(0, length));
    ExpectLoadFails(path, ErrorCode::kFormat);
  }
  ExpectSameContinuation(session_, *before_, 24);
}

TEST_F(StateFileErrorTest, CorruptHeaderBytesAreRejected) {
  const std::string bytes = ReadAll(good_);
  const std::string path = Path("flipped.safetensors");
  auto flipped = [&](size_t offset) {
    std::string copy = bytes;
    copy[offset] = static_cast<char>(copy[offset] ^ 0x55);
    return copy;
  };
  WriteAll(path, flipped(8));  // the opening brace of the JSON header
  ExpectLoadFails(path, ErrorCode::kFormat);
  WriteAll(path, flipped(bytes.find("titans.memory_state")));
  ExpectLoadFails(path, ErrorCode::kFormat);
  WriteAll(path, flipped(bytes.find("\"w_cur.0\"") + 2));  // a tensor name
  ExpectLoadFails(path, ErrorCode::kFormat);
  ExpectSameContinuation(session_, *before_, 25);
}

TEST_F(StateFileErrorTest, NonFiniteValuesAreRejected) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const std::string with_nan = Rewrite(
      "nan.safetensors", [&](auto&, auto& tensors) { SetF32(Find(tensors, "w_cur.0"), 3, nan); });
  EXPECT_NE(ExpectLoadFails(with_nan, ErrorCode::kFormat).find("w_cur.0"), std::string::npos);
  const std::string with_inf = Rewrite("inf.safetensors", [&](auto&, auto& tensors) {
    SetF32(Find(tensors, "pending_k"), 0, -inf);
  });
  EXPECT_NE(ExpectLoadFails(with_inf, ErrorCode::kFormat).find("pending_k"), std::string::npos);
  ExpectSameContinuation(session_, *before_, 26);
}

TEST_F(StateFileErrorTest, BadMetadataIsAFormatError) {
  using Metadata = std::map<std::string, std::string>;
  using Tensors = std::vector<Tensor>;
  const std::vector<std::pair<std::string, std::function<void(Metadata&)>>> edits{
      {"no format", [](Metadata& m) { m.erase("format"); }},
      {"other format", [](Metadata& m) { m["format"] = "titans.model"; }},
      {"no version", [](Metadata& m) { m.erase("format_version"); }},
      {"version 3", [](Metadata& m) { m["format_version"] = "3"; }},
      {"no config", [](Metadata& m) { m.erase("config"); }},
      {"config not JSON", [](Metadata& m) { m["config"] = "{\"d_model\": 16"; }},
      {"config incomplete", [](Metadata& m) { m["config"] = "{\"d_model\": 16}"; }},
      {"config invalid",
       [&](Metadata& m) {
         MemoryConfig bad = config_;
         bad.step = 0;  // FromJson validates
         m["config"] = bad.ToJson();
       }},
  };
  for (const auto& edit : edits) {  // not [what, edit]: clang 14 cannot capture bindings
    SCOPED_TRACE(edit.first);
    const std::string path =
        Rewrite("bad.safetensors", [&](Metadata& m, Tensors&) { edit.second(m); });
    ExpectLoadFails(path, ErrorCode::kFormat);
  }
  ExpectSameContinuation(session_, *before_, 27);
}

TEST_F(StateFileErrorTest, BadTensorsAreAFormatError) {
  using Metadata = std::map<std::string, std::string>;
  using Tensors = std::vector<Tensor>;
  const int unit = config_.unit();
  const std::vector<std::pair<std::string, std::function<void(Tensors&)>>> edits{
      {"negative position", [](Tensors& t) { SetI64(Find(t, "position"), -1); }},
      {"pending = unit", [&](Tensors& t) { SetI64(Find(t, "pending"), unit); }},
      {"negative pending", [](Tensors& t) { SetI64(Find(t, "pending"), -1); }},
      {"missing tensor",
       [](Tensors& t) {
         t.erase(std::find_if(t.begin(), t.end(), [](auto& x) { return x.name == "w_base.1"; }));
       }},
      {"extra tensor",
       [](Tensors& t) {
         t.push_back({"extra", io::DType::kF32, {1}, std::vector<std::byte>(4)});
       }},
      {"position as F64", [](Tensors& t) { Find(t, "position").dtype = io::DType::kF64; }},
      {"wrong shape",
       [](Tensors& t) {
         Tensor& w = Find(t, "w_cur.0");
         std::reverse(w.shape.begin(), w.shape.end());
       }},
  };
  for (const auto& edit : edits) {  // not [what, edit]: clang 14 cannot capture bindings
    SCOPED_TRACE(edit.first);
    const std::string path =
        Rewrite("bad.safetensors", [&](Metadata&, Tensors& t) { edit.second(t); });
    ExpectLoadFails(path, ErrorCode::kFormat);
  }
  ExpectSameContinuation(session_, *before_, 28);
}

TEST_F(StateFileErrorTest, MissingFileIsAnIoError) {
  ExpectLoadFails(Path("missing.safetensors"), ErrorCode::kIo);
  ExpectSameContinuation(session_, *before_, 29);
}

TEST_F(StateFileErrorTest, SaveIntoMissingDirectoryIsAnIoError) {
  ExpectError(ErrorCode::kIo, [&] { session_.Save(Path("no/such/dir/state.safetensors")); });
  EXPECT_EQ(Listing(), std::vector<std::string>{"good.safetensors"});
}

}  // namespace
}  // namespace titans
