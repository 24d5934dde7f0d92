// Hostile sizes (issue 13, item 3): a small file whose config implies a huge model fails
// before anything is allocated for it, and the attention cache grows with the stream instead of
// being allocated for the whole window.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "hostile_input.hpp"
#include "io/safetensors.hpp"
#include "ops/attention.hpp"
#include "sanitizers.hpp"
#include "scratch_dir.hpp"
#include "titans/titans.hpp"

namespace titans {
namespace {

using namespace hostile;
using testing::ScratchDir;

// ---------------------------------------------------------------------------------------------
// 3. Allocations: a small file cannot demand gigabytes; the attention cache grows.

bool UnderAddressSanitizer() { return testing::kUnderAddressSanitizer; }

// Runs `call` in a child process whose address space may grow by at most `budget` bytes;
// returns the child's exit status (0: call returned true).
int RunWithAddressSpaceBudget(uint64_t budget, const std::function<bool()>& call) {
  const pid_t child = ::fork();
  if (child == 0) {
    std::ifstream statm("/proc/self/statm");
    uint64_t pages = 0;
    statm >> pages;
    const uint64_t limit = pages * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE)) + budget;
    const rlimit rl{limit, limit};
    if (::setrlimit(RLIMIT_AS, &rl) != 0) ::_exit(10);
    try {
      ::_exit(call() ? 0 : 1);
    } catch (const std::bad_alloc&) {
      ::_exit(2);
    } catch (...) {
      ::_exit(3);
    }
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status)
                           : 100 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

TEST(HostileAlloc, SmallFileWithHugeConfigAllocatesNothingForIt) {
  ScratchDir scratch("titans_hostile_");
  const ModelConfig c = Small();
  const Model model(c, ModelWeights::Random(c, 1));
  std::vector<io::TensorToWrite> tensors;
  for (const ConstTensorView& v : model.weights().Tensors(c)) {
    tensors.push_back({v.name, io::DType::kF32, v.shape, v.data});
  }
  // vocab 16M x d 32: a 2 GB embedding (and LM head) that the ~100 KB file does not hold.
  const std::string path = scratch.Path("huge_vocab.safetensors");
  io::WriteSafetensors(path,
                       {{"format", "titans.model"},
                        {"format_version", "1"},
                        {"config", WithField(c, "/vocab_size", "16000000")}},
                       tensors);
  EXPECT_LT(std::filesystem::file_size(path), 400'000u);

  // A memory weights file the same way: 1024 hidden layers of 8 x 8192 per head (550 GB).
  MemoryConfig m = MemoryConfig::Paper(32, 2, 8);
  const NeuralMemory memory(m, MemoryWeights::Random(m, 2));
  std::vector<io::TensorToWrite> memory_tensors;
  for (const ConstTensorView& v : memory.weights().Tensors(m)) {
    memory_tensors.push_back({v.name, io::DType::kF32, v.shape, v.data});
  }
  nlohmann::json mj = nlohmann::json::parse(m.ToJson());
  mj["depth"] = 1024;
  mj["expansion"] = 1024.0;
  const std::string memory_path = scratch.Path("huge_memory.safetensors");
  io::WriteSafetensors(
      memory_path, {{"format", "titans.memory"}, {"format_version", "1"}, {"config", mj.dump()}},
      memory_tensors);

  // Both in a child process with 256 MB of address space to spare: they fail cleanly instead
  // of running out of memory (or, without the limit, taking the machine's).
  // (RLIMIT_AS does not mix with AddressSanitizer's shadow memory: there, only the messages.)
  if (!UnderAddressSanitizer()) {
    const int status = RunWithAddressSpaceBudget(256u << 20, [&] {
      auto fails_naming = [](auto&& load, const char* needle) {
        try {
          load();
        } catch (const Error& e) {
          return e.code() == ErrorCode::kFormat &&
                 std::string(e.what()).find(needle) != std::string::npos;
        }
        return false;
      };
      return fails_naming([&] { Model::Load(path); }, "embedding") &&
             fails_naming([&] { NeuralMemory::Load(memory_path); }, "mlp.0");
    });
    ASSERT_EQ(status, 0) << "1: another error or none, 2: bad_alloc";
  }
  ExpectError([&] { Model::Load(path); }, ErrorCode::kFormat,
              {path, "tensor \"embedding\"", "[16000000, 32]"});
  ExpectError([&] { NeuralMemory::Load(memory_path); }, ErrorCode::kFormat,
              {memory_path, "mlp.0", "[2, 8, 8192]"});
}

// Every integer field of a small model's config set to legal but huge values (2^31 - 1, 2^20,
// 65536), the small file's tensors kept: each load, and a Session and one token on what loads,
// stays within 256 MB of address space and ends in a titans::Error or a working model; never
// std::bad_alloc, never a crash. The sweep runs in one child process per value.
TEST(HostileAlloc, EveryIntegerFieldAtHugeLegalValuesStaysWithinTheFilesSize) {
  if (UnderAddressSanitizer()) GTEST_SKIP() << "RLIMIT_AS does not mix with ASan's shadow memory";
  ScratchDir scratch("titans_hostile_");
  const ModelConfig c = Small();
  const Model model(c, ModelWeights::Random(c, 1));
  const nlohmann::json flat = nlohmann::json::parse(c.ToJson()).flatten();
  int swept = 0;
  for (const auto& item : flat.items()) {
    if (!item.value().is_number_integer()) continue;
    for (const char* value : {"2147483647", "1048576", "65536"}) {
      const std::string pointer = item.key();
      SCOPED_TRACE(pointer + " = " + value);
      const std::string path = scratch.Path("m.safetensors");
      io::WriteSafetensors(path,
                           {{"format", "titans.model"},
                            {"format_version", "1"},
                            {"config", WithField(c, pointer, value)}},
                           TensorsOf(model));
      const int status = RunWithAddressSpaceBudget(256u << 20, [&] {
        try {
          auto loaded = Model::Load(path);
          Session session(loaded, SessionOptions{.threads = 1});
          if (loaded->config().vocab_size > 0) {
            const int32_t token = 1;
            std::vector<float> logits(static_cast<size_t>(loaded->config().vocab_size));
            session.Forward(std::span<const int32_t>(&token, 1), logits);
          }
        } catch (const Error&) {
        }
        return true;
      });
      EXPECT_EQ(status, 0) << "2: bad_alloc, 3: another exception, >100: a signal";
      ++swept;
    }
  }
  EXPECT_GT(swept, 30);
}

TEST(HostileAlloc, AttentionCacheGrowsWithTheStream) {
  AttentionShape shape;
  shape.heads = 2;
  shape.kv_heads = 1;
  shape.head_dim = 8;
  shape.window = std::numeric_limits<int>::max();  // 2^31 rows of 8 floats, twice: 128 GB whole
  AttentionCache cache(shape);
  EXPECT_EQ(cache.allocated_rows(), 0);
  std::vector<float> k(100 * 8, 0.5f), v(100 * 8, -0.5f);
  cache.Append(k.data(), v.data(), 3);
  EXPECT_GE(cache.allocated_rows(), 3);
  EXPECT_LE(cache.allocated_rows(), 16);
  cache.Append(k.data(), v.data(), 100);
  EXPECT_GE(cache.allocated_rows(), 103);
  EXPECT_LE(cache.allocated_rows(), 206);
  EXPECT_EQ(cache.size(), 103);
  EXPECT_EQ(cache.key(50)[0], 0.5f);
  // A small window stops at its size and wraps.
  shape.window = 40;
  AttentionCache ring(shape);
  for (int i = 0; i < 30; ++i) {
    std::vector<float> row(8, static_cast<float>(i));
    ring.Append(row.data(), row.data(), 1);
  }
  EXPECT_LE(ring.allocated_rows(), 40);
  for (int i = 30; i < 100; ++i) {
    std::vector<float> row(8, static_cast<float>(i));
    ring.Append(row.data(), row.data(), 1);
  }
  EXPECT_EQ(ring.allocated_rows(), 40);
  for (int64_t j = ring.first(); j < ring.position(); ++j) {
    EXPECT_EQ(ring.key(j)[0], static_cast<float>(j));
  }
}

TEST(HostileAlloc, HugeWindowModelGeneratesWithoutAllocatingTheWindow) {
  // window 2^31 - 1 (legal): allocated whole, each attention layer's cache would be 2^31 rows
  // of 16 floats, twice (256 GB). Growing, it holds what the stream has seen, and equals a
  // model whose window covers the stream.
  const ModelConfig huge = Small({kMal, kAttention, kMag}, std::numeric_limits<int>::max());
  ModelConfig small = huge;
  small.attention.window = 64;
  const ModelWeights weights = ModelWeights::Random(huge, 5);
  auto a = std::make_shared<const Model>(huge, weights);
  auto b = std::make_shared<const Model>(small, weights);
  Session sa(a, SessionOptions{.threads = 1}), sb(b, SessionOptions{.threads = 1});
  const std::vector<int32_t> prompt{1, 2, 3, 4, 5, 6, 7};
  EXPECT_EQ(sa.Generate(prompt, 2, {}), sb.Generate(prompt, 2, {}));
  // Pieces across the doubling points: bit for bit the same logits.
  std::vector<float> la(64), lb(64);
  for (int t = 0; t < 50; ++t) {
    const int32_t token = (t * 7) % 64;
    sa.Forward(std::span<const int32_t>(&token, 1), la);
    sb.Forward(std::span<const int32_t>(&token, 1), lb);
    ASSERT_EQ(la, lb) << "token " << t;
  }
  // Save and load a grown cache.
  ScratchDir scratch("titans_hostile_");
  sa.Save(scratch.Path("session.safetensors"));
  Session sc(a, SessionOptions{.threads = 1});
  sc.Load(scratch.Path("session.safetensors"));
  const int32_t token = 9;
  std::vector<float> lc(64);
  sa.Forward(std::span<const int32_t>(&token, 1), la);
  sc.Forward(std::span<const int32_t>(&token, 1), lc);
  EXPECT_EQ(la, lc);
}

}  // namespace
}  // namespace titans
