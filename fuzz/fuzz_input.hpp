// The fuzz targets' shared piece: the engine's loaders take paths, so each input is written to
// a file first (under /dev/shm, a memory file system, when it exists: no disk traffic).
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

namespace titans::fuzz {

// The path of this process's input file, rewritten with `data` on every call.
inline const std::string& InputFile(const uint8_t* data, size_t size) {
  static const std::string path =
      std::string(::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp") + "/titans_fuzz_" +
      std::to_string(::getpid()) + ".safetensors";
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) __builtin_trap();  // the harness itself is broken: stop loudly
  if (size > 0 && std::fwrite(data, 1, size, f) != size) __builtin_trap();
  std::fclose(f);
  return path;
}

}  // namespace titans::fuzz
