// Hostile paths and killed saves (issue 13, items 6, 7): a FIFO given as a model path is
// refused at once instead of blocking; temporary files that killed saves left behind are removed
// by the next save to the same target, and those of live processes never.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "hostile_input.hpp"
#include "io/safetensors.hpp"
#include "scratch_dir.hpp"
#include "titans/titans.hpp"

namespace titans {
namespace {

using namespace hostile;
using testing::ScratchDir;

// ---------------------------------------------------------------------------------------------
// 6. A FIFO as a model path is refused at once.

TEST(HostileFiles, FifoIsRefusedWithoutBlocking) {
  ScratchDir scratch("titans_hostile_");
  const std::string path = scratch.Path("model.fifo");
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0) << std::strerror(errno);
  // Should Open block (the bug), writers opened after 5 s let it return, and the time shows.
  std::atomic<bool> done{false};
  std::thread unblock([&] {
    for (int i = 0; !done; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      if (i >= 50) {  // from 5 s on, a writer now and then: every blocked open returns
        const int fd = ::open(path.c_str(), O_WRONLY | O_NONBLOCK);
        if (fd >= 0) ::close(fd);
      }
    }
  });
  const auto start = std::chrono::steady_clock::now();
  ExpectError([&] { io::SafetensorsFile::Open(path); }, ErrorCode::kIo,
              {path, "not a regular file"});
  ExpectError([&] { Model::Load(path); }, ErrorCode::kIo, {"not a regular file"});
  done = true;
  unblock.join();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  // A directory too.
  ExpectError([&] { Model::Load(scratch.dir().string()); }, ErrorCode::kIo, {"not a regular file"});
}

// ---------------------------------------------------------------------------------------------
// 7. Temporary files of killed saves are removed by the next save to the same target.

pid_t DeadPid() {
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  int status = 0;
  ::waitpid(child, &status, 0);
  return child;  // reaped: no such process (until the pid is reused, which takes a while)
}

TEST(HostileFiles, NextSaveRemovesStaleTemporaryFiles) {
  ScratchDir scratch("titans_hostile_");
  const std::string target = scratch.Path("model.safetensors");
  const std::string dead = std::to_string(DeadPid());
  const std::string live = std::to_string(::getppid());  // alive: our parent
  const std::string self = std::to_string(::getpid());
  const std::vector<std::string> stale{"model.safetensors.tmp." + dead + ".0",
                                       "model.safetensors.tmp." + dead + ".17",
                                       "model.safetensors.tmp." + self + ".999999",
                                       // a write into a file that an OutputSet staged
                                       "model.safetensors.tmp." + dead + ".2.tmp." + dead + ".4"};
  const std::vector<std::string> kept{
      "model.safetensors.tmp." + live + ".3",          // a live process's save in progress
      "other.safetensors.tmp." + dead + ".0",          // another target's
      "model.safetensors.tmp." + dead + ".x",          // not the pattern
      "model.safetensors.tmp." + dead,                 // not the pattern
      "model.safetensors.tmp.-" + dead + ".1",         // not the pattern
      "model.safetensors.tmp." + dead + ".1.bak",      // not the pattern
      "model.safetensors.tmp." + dead + ".1.tmp.x.2",  // not the pattern
      "model.safetensors.tmp." + live + ".1.tmp." + dead + ".2"  // a live process's staging
  };
  for (const std::string& name : stale) WriteAll(scratch.Path(name), "half a file");
  for (const std::string& name : kept) WriteAll(scratch.Path(name), "keep");
  ASSERT_EQ(::mkdir(scratch.Path("model.safetensors.tmp." + dead + ".5").c_str(), 0700), 0);

  const ModelConfig c = Small();
  Model(c, ModelWeights::Random(c, 1)).Save(target);
  std::vector<std::string> expected = kept;
  expected.push_back("model.safetensors");
  expected.push_back("model.safetensors.tmp." + dead + ".5");  // a directory: left alone
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(scratch.Listing(), expected);
  EXPECT_NO_THROW(Model::Load(target));

  // A session file and a memory state file the same way (every save goes through one writer).
  const std::string state = scratch.Path("state.safetensors");
  WriteAll(state + ".tmp." + dead + ".1", "half");
  MemoryConfig m = MemoryConfig::Paper(32, 2, 8);
  MemorySession session(std::make_shared<const NeuralMemory>(m, MemoryWeights::Random(m, 1)));
  session.Save(state);
  EXPECT_FALSE(std::filesystem::exists(state + ".tmp." + dead + ".1"));
}

// 100 saves killed (SIGKILL) at random moments: the target is always the old or the new file,
// whole, and the next save leaves no temporary file behind.
TEST(HostileFiles, KilledSavesLeaveOldOrNewAndTheNextSaveCleansUp) {
  ScratchDir scratch("titans_hostile_");
  const std::string target = scratch.Path("state.safetensors");
  // Two states of one memory, A (new) and B (after 64 tokens), ~0.5 MB each.
  MemoryConfig m = MemoryConfig::Paper(128, 4, 32, 2, 16);
  auto memory = std::make_shared<const NeuralMemory>(m, MemoryWeights::Random(m, 7));
  MemorySession a(memory), b(memory);
  std::vector<float> x(64 * 128), out(64 * static_cast<size_t>(b.memory().output_width()));
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.1f * static_cast<float>(i));
  b.Forward(x, out);
  a.Save(target);

  std::mt19937 rng(11);
  int old_seen = 0, new_seen = 0, inside_save = 0;
  for (int kill = 0; kill < 100; ++kill) {
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {  // saves B and A in turn until killed
      for (int i = 0;; ++i) (i % 2 ? a : b).Save(target);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 20000));
    ::kill(child, SIGKILL);
    int status = 0;
    ::waitpid(child, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status)) << "the saving child ended by itself";
    inside_save += scratch.Listing().size() > 1;
    MemorySession loaded(memory);
    ASSERT_NO_THROW(loaded.Load(target)) << "after kill " << kill;
    if (loaded.state().w_cur == a.state().w_cur) {
      ++old_seen;
    } else {
      ASSERT_EQ(loaded.state().w_cur, b.state().w_cur) << "neither A nor B after kill " << kill;
      ++new_seen;
    }
  }
  // Many kills land inside a save (an fsync takes milliseconds) and leave its temporary file
  // (the next child's first save removes it: the pid is dead).
  std::cout << "kills: 100; target A " << old_seen << ", B " << new_seen << "; kills inside a save "
            << inside_save << "\n";
  EXPECT_GT(inside_save, 10);
  a.Save(target);  // the next save removes what the killed ones left
  EXPECT_EQ(scratch.Listing(), std::vector<std::string>{"state.safetensors"});
}

// ---------------------------------------------------------------------------------------------
// 4. The outputs of one command: all written, or none.

TEST(HostileFiles, OutputSetWritesAllOrNothing) {
  ScratchDir scratch("titans_hostile_");
  const std::string a = scratch.Path("a.safetensors"), b = scratch.Path("b.safetensors");
  WriteAll(a, "old a");
  const float x = 1.0f;
  {  // the second output cannot be written (no such directory): a keeps its old contents
    io::OutputSet outputs;
    io::WriteSafetensors(outputs.Stage(a), {}, {{"x", io::DType::kF32, {1}, &x}});
    EXPECT_THROW(io::WriteSafetensors(outputs.Stage(scratch.Path("no/dir/b.safetensors")), {},
                                      {{"x", io::DType::kF32, {1}, &x}}),
                 Error);
  }
  EXPECT_EQ(scratch.Listing(), std::vector<std::string>{"a.safetensors"});  // staged files gone
  EXPECT_EQ(ReadAll(a), "old a");

  io::OutputSet outputs;
  io::WriteSafetensors(outputs.Stage(a), {}, {{"x", io::DType::kF32, {1}, &x}});
  const ModelConfig c = Small();
  Model(c, ModelWeights::Random(c, 1)).Save(outputs.Stage(b));
  EXPECT_EQ(ReadAll(a), "old a");  // nothing renamed before Commit
  EXPECT_FALSE(std::filesystem::exists(b));
  outputs.Commit();
  EXPECT_EQ(scratch.Listing(), (std::vector<std::string>{"a.safetensors", "b.safetensors"}));
  EXPECT_NO_THROW(io::SafetensorsFile::Open(a).Find("x"));
  EXPECT_NO_THROW(Model::Load(b));
  EXPECT_THROW(outputs.Stage(scratch.dir()), Error);  // a directory is no output
}

}  // namespace
}  // namespace titans
