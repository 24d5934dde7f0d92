// libFuzzer target: ModelConfig::FromJson and MemoryConfig::FromJson on arbitrary text. A bad
// config must end in a titans::Error; a good one must survive the round trip through its
// canonical JSON unchanged (what model and state files store).
#include <cstddef>
#include <cstdint>
#include <string>

#include "titans/titans.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const titans::ModelConfig c = titans::ModelConfig::FromJson(text);
    if (!(titans::ModelConfig::FromJson(c.ToJson()) == c)) __builtin_trap();
  } catch (const titans::Error&) {
  }
  try {
    const titans::MemoryConfig m = titans::MemoryConfig::FromJson(text);
    if (!(titans::MemoryConfig::FromJson(m.ToJson()) == m)) __builtin_trap();
  } catch (const titans::Error&) {
  }
  return 0;
}
