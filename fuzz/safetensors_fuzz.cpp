// libFuzzer target: the safetensors reader (src/io/safetensors.cpp) on arbitrary bytes. Every
// malformed file must end in a titans::Error; a file that opens must have tensors whose bytes
// can be read back as described (ReadF32 of each F32 tensor with its own shape).
#include <cstddef>
#include <cstdint>
#include <vector>

#include "fuzz_input.hpp"
#include "io/safetensors.hpp"
#include "titans/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const titans::io::SafetensorsFile file =
        titans::io::SafetensorsFile::Open(titans::fuzz::InputFile(data, size));
    for (const titans::io::TensorRecord& t : file.tensors()) {
      if (t.dtype != titans::io::DType::kF32) continue;
      std::vector<float> out(t.bytes.size() / sizeof(float));  // bounded by the file's size
      file.ReadF32(t.name, t.shape, out);
    }
  } catch (const titans::Error&) {
  }
  return 0;
}
