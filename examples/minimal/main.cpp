// minimal: load a model, run a prompt, print the continuation.
//   titans make-model model.safetensors && minimal model.safetensors "Once upon a time"
#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "titans/titans.hpp"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL [PROMPT]\n", argv[0]);
    return 2;
  }
  try {
    const auto model = titans::Model::Load(argv[1]);  // throws titans::Error on a bad file
    const int vocab = model->config().vocab_size;
    const std::string text = argc > 2 ? argv[2] : "Titans learn to memorize at test time.";
    std::vector<int32_t> prompt = {0, 1, 2};  // a few token ids, or for a byte-level model
    if (vocab == 256) {                       // (vocab 256) the text's UTF-8 bytes
      prompt.clear();
      for (unsigned char c : text) prompt.push_back(c);
    }

    titans::Session session(model);  // one stream's state; the model is shared and immutable
    const titans::SamplerOptions sampler{
        .temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .seed = 1};
    for (int32_t t : session.Generate(prompt, /*max_new_tokens=*/64, sampler)) {
      if (vocab != 256) {
        std::printf("%d ", t);
      } else {
        std::printf(t >= 32 && t < 127 && t != '\\' ? "%c" : "\\x%02x", t);  // ASCII or \xHH
      }
    }
    std::printf("\n");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
