// safetensors reader and atomic writer: round trips, atomic replacement, and every kind of
// corrupt file rejected with Error(kFormat) before anything is used.
#include "io/safetensors.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "scratch_dir.hpp"
#include "titans/error.hpp"

namespace titans::io {
namespace {

namespace fs = std::filesystem;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void WriteAll(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

template <class T>
std::string Bytes(const std::vector<T>& values) {
  return {reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T)};
}

// A safetensors file by hand: header length (u64 LE), header text, data bytes.
std::string Build(const std::string& header, const std::string& data, uint64_t header_size_field) {
  return std::string(reinterpret_cast<const char*>(&header_size_field), 8) + header + data;
}
std::string Build(const std::string& header, const std::string& data) {
  return Build(header, data, header.size());
}

// Tensor "a" F32 [2] = {1, 2} and "b" I32 [1] = {7}: 12 data bytes.
const std::string kSmallHeader = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                 R"("b":{"dtype":"I32","shape":[1],"data_offsets":[8,12]}})";
const std::string kSmallData = Bytes(std::vector<float>{1, 2}) + Bytes(std::vector<int32_t>{7});

class SafetensorsTest : public ::testing::Test {
 protected:
  std::string Path(const std::string& name) const { return scratch_.Path(name); }
  std::vector<std::string> Listing() const { return scratch_.Listing(); }

  // Writes `bytes` to a file and expects Open to reject it with kFormat, naming the file; the
  // message must also contain `expected_text`.
  void ExpectFormatError(const std::string& why, const std::string& bytes,
                         const std::string& expected_text = "") {
    SCOPED_TRACE(why);
    const std::string path = Path("corrupt.safetensors");
    WriteAll(path, bytes);
    try {
      SafetensorsFile::Open(path);
      ADD_FAILURE() << "accepted";
    } catch (const Error& e) {
      const std::string message = e.what();
      EXPECT_EQ(e.code(), ErrorCode::kFormat) << message;
      EXPECT_NE(message.find(path), std::string::npos) << message;
      EXPECT_NE(message.find(expected_text), std::string::npos) << message;
    }
  }

  titans::testing::ScratchDir scratch_{"titans_safetensors_"};
};

TEST_F(SafetensorsTest, RoundTripsDtypesShapesAndMetadata) {
  const std::vector<float> f32{1.5f, -2.0f, 3.25f, 0.0f, -0.0f, 1e-30f};
  const std::vector<double> f64{3.141592653589793, -1e300, 0.5, 2.0};
  const std::vector<int32_t> i32{-1, 2, -3, 4, -5, 6};
  const int64_t i64 = -1234567890123;
  const float scalar = 42.0f;
  const std::map<std::string, std::string> metadata{
      {"format", "test"}, {"nested json", R"({"x": [1, 2]})"}, {"utf8", "\xc3\xa9t\xc3\xa9"}};
  // Not in name order: the writer keeps the order given, the reader the order in the file.
  const std::vector<TensorToWrite> tensors{
      {"z.f32", DType::kF32, {2, 3}, f32.data()},
      {"scalar", DType::kF32, {}, &scalar},  // 0-d: one element
      {"empty", DType::kF32, {0, 5}, nullptr},
      {"f64", DType::kF64, {4}, f64.data()},
      {"i32", DType::kI32, {3, 1, 2}, i32.data()},
      {"i64", DType::kI64, {1}, &i64},
  };
  const std::string path = Path("round.safetensors");
  WriteSafetensors(path, metadata, tensors);

  const SafetensorsFile file = SafetensorsFile::Open(path);
  EXPECT_EQ(file.metadata(), metadata);
  ASSERT_EQ(file.tensors().size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorRecord& got = file.tensors()[i];
    SCOPED_TRACE(tensors[i].name);
    EXPECT_EQ(got.name, tensors[i].name);
    EXPECT_EQ(got.dtype, tensors[i].dtype);
    EXPECT_EQ(got.shape, tensors[i].shape);
    int64_t elements = 1;
    for (int64_t d : got.shape) elements *= d;
    ASSERT_EQ(got.bytes.size(), static_cast<size_t>(elements) * DTypeSize(got.dtype));
    if (!got.bytes.empty()) {
      EXPECT_EQ(std::memcmp(got.bytes.data(), tensors[i].data, got.bytes.size()), 0);
    }
    EXPECT_EQ(file.Find(got.name), &got);
  }
  EXPECT_EQ(file.Find("missing"), nullptr);

  std::vector<float> back(6);
  file.ReadF32("z.f32", {2, 3}, back);
  EXPECT_EQ(std::memcmp(back.data(), f32.data(), f32.size() * sizeof(float)), 0);
  float scalar_back = 0;
  file.ReadF32("scalar", {}, {&scalar_back, 1});
  EXPECT_EQ(scalar_back, 42.0f);
  file.ReadF32("empty", {0, 5}, {});

  // The data section starts at a multiple of 8: the header is padded with spaces.
  const std::string bytes = ReadAll(path);
  uint64_t header_size = 0;
  std::memcpy(&header_size, bytes.data(), 8);
  EXPECT_EQ((8 + header_size) % 8, 0u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(file.tensors()[0].bytes.data()) % 8, 0u);
}

TEST_F(SafetensorsTest, RoundTripsAFileWithoutTensorsOrMetadata) {
  const std::string path = Path("empty.safetensors");
  WriteSafetensors(path, {}, {});
  const SafetensorsFile file = SafetensorsFile::Open(path);
  EXPECT_TRUE(file.metadata().empty());
  EXPECT_TRUE(file.tensors().empty());
}

TEST_F(SafetensorsTest, ReadsFilesWrittenByOthers) {
  // Unpadded header, metadata last, tensors listed out of offset order: all allowed.
  const std::string header =
      R"({"b":{"dtype":"I32","shape":[1],"data_offsets":[8,12]},)"
      R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"__metadata__":{"k":"v"}})";
  const std::string path = Path("other.safetensors");
  WriteAll(path, Build(header, kSmallData));
  const SafetensorsFile file = SafetensorsFile::Open(path);
  EXPECT_EQ(file.metadata(), (std::map<std::string, std::string>{{"k", "v"}}));
  ASSERT_EQ(file.tensors().size(), 2u);
  EXPECT_EQ(file.tensors()[0].name, "b");
  std::vector<float> a(2);
  file.ReadF32("a", {2}, a);
  EXPECT_EQ(a, (std::vector<float>{1, 2}));
}

TEST_F(SafetensorsTest, ReadF32ChecksNameDtypeAndShape) {
  const std::string path = Path("small.safetensors");
  WriteAll(path, Build(kSmallHeader, kSmallData));
  const SafetensorsFile file = SafetensorsFile::Open(path);
  std::vector<float> out(2);
  auto expect_mismatch = [&](const std::string& name, const std::vector<int64_t>& shape,
                             const std::vector<std::string>& words) {
    SCOPED_TRACE(name);
    try {
      file.ReadF32(name, shape, out);
      ADD_FAILURE() << "accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kMismatch) << e.what();
      for (const std::string& word : words) {
        EXPECT_NE(std::string(e.what()).find(word), std::string::npos) << e.what();
      }
    }
  };
  expect_mismatch("nope", {2}, {"\"nope\"", "F32 [2]"});
  expect_mismatch("b", {1}, {"\"b\"", "I32 [1]", "F32 [1]"});
  expect_mismatch("a", {1, 2}, {"\"a\"", "F32 [2]", "F32 [1, 2]"});
  EXPECT_EQ(out, (std::vector<float>(2, 0.0f))) << "a failed read must not write";

  std::vector<float> wrong_size(3);
  try {
    file.ReadF32("a", {2}, wrong_size);
    ADD_FAILURE() << "accepted a 3-float buffer for 2 floats";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
  }
}

TEST_F(SafetensorsTest, WriterRejectsBadTensorsBeforeCreatingAFile) {
  const float x = 1;
  const std::vector<std::vector<TensorToWrite>> bad{
      {{"a", DType::kF32, {1}, &x}, {"a", DType::kF32, {1}, &x}},  // duplicate name
      {{"__metadata__", DType::kF32, {1}, &x}},                    // reserved name
      {{"a", DType::kF32, {-1}, &x}},                              // negative dimension
      {{"a", DType::kF32, {1}, nullptr}},                          // no data
      {{"\xff", DType::kF32, {1}, &x}},                            // not UTF-8
  };
  for (size_t i = 0; i < bad.size(); ++i) {
    SCOPED_TRACE(i);
    try {
      WriteSafetensors(Path("bad.safetensors"), {}, bad[i]);
      ADD_FAILURE() << "accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << e.what();
    }
    EXPECT_TRUE(Listing().empty());
  }
}

TEST_F(SafetensorsTest, ReplacesAtomicallyAndLeavesNoTemporaryFiles) {
  const std::string path = Path("state.safetensors");
  const std::vector<float> first{1, 2, 3}, second{4, 5};
  WriteSafetensors(path, {{"v", "1"}}, {{"x", DType::kF32, {3}, first.data()}});
  WriteSafetensors(path, {{"v", "2"}}, {{"x", DType::kF32, {2}, second.data()}});
  EXPECT_EQ(Listing(), std::vector<std::string>{"state.safetensors"});
  const SafetensorsFile file = SafetensorsFile::Open(path);
  EXPECT_EQ(file.metadata().at("v"), "2");
  std::vector<float> back(2);
  file.ReadF32("x", {2}, back);
  EXPECT_EQ(back, second);
}

TEST_F(SafetensorsTest, WriteIntoMissingDirectoryIsAnIoError) {
  const float x = 1;
  try {
    WriteSafetensors(Path("no/such/dir/x.safetensors"), {}, {{"x", DType::kF32, {1}, &x}});
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kIo) << e.what();
    EXPECT_NE(std::string(e.what()).find("No such file or directory"), std::string::npos)
        << e.what();
  }
  EXPECT_TRUE(Listing().empty());
}

// Limits the size of files this process may write (RLIMIT_FSIZE, which binds root as well), so
// that write() fails with EFBIG instead of raising SIGXFSZ; both are restored at scope exit.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    old_handler_ = ::signal(SIGXFSZ, SIG_IGN);
    ::getrlimit(RLIMIT_FSIZE, &old_limit_);
    rlimit limit = old_limit_;
    limit.rlim_cur = std::min(bytes, old_limit_.rlim_max);
    ok_ = ::setrlimit(RLIMIT_FSIZE, &limit) == 0;
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &old_limit_);
    ::signal(SIGXFSZ, old_handler_);
  }
  bool ok() const { return ok_; }

 private:
  rlimit old_limit_{};
  void (*old_handler_)(int);
  bool ok_ = false;
};

TEST_F(SafetensorsTest, FailedWriteLeavesTheTargetUntouched) {
  const std::string path = Path("state.safetensors");
  const std::vector<float> small{1, 2, 3};
  WriteSafetensors(path, {{"v", "old"}}, {{"x", DType::kF32, {3}, small.data()}});
  const std::string before = ReadAll(path);

  const std::vector<float> big(1 << 16, 0.5f);  // 256 KiB, over the limit below
  {
    FileSizeLimit limit(64 << 10);
    ASSERT_TRUE(limit.ok());
    try {
      WriteSafetensors(path, {{"v", "new"}}, {{"x", DType::kF32, {1 << 16}, big.data()}});
      ADD_FAILURE() << "the write over the file size limit succeeded";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kIo) << e.what();
    }
  }
  EXPECT_EQ(ReadAll(path), before);
  EXPECT_EQ(Listing(), std::vector<std::string>{"state.safetensors"});
}

TEST_F(SafetensorsTest, FailedRenameRemovesTheTemporaryFile) {
  // The target is a non-empty directory: everything succeeds except the final rename.
  const std::string path = Path("occupied");
  fs::create_directories(fs::path(path) / "child");
  const float x = 1;
  try {
    WriteSafetensors(path, {}, {{"x", DType::kF32, {1}, &x}});
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kIo) << e.what();
  }
  EXPECT_EQ(Listing(), std::vector<std::string>{"occupied"});
  EXPECT_TRUE(fs::is_directory(fs::path(path) / "child"));
}

TEST_F(SafetensorsTest, MissingFileOrDirectoryIsAnIoError) {
  for (const std::string& path : {Path("missing.safetensors"), scratch_.dir().string()}) {
    SCOPED_TRACE(path);
    try {
      SafetensorsFile::Open(path);
      ADD_FAILURE() << "accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kIo) << e.what();
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
  }
}

TEST_F(SafetensorsTest, RejectsCorruptFilesWithFormatErrors) {
  const std::string tensor_a = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  const std::string eight = kSmallData.substr(0, 8);
  auto one = [](const std::string& entry) { return R"({"a":)" + entry + "}"; };

  ExpectFormatError("empty file", "", "0 bytes");
  ExpectFormatError("4 bytes", "abcd", "4 bytes");
  ExpectFormatError("header length 0", Build("", ""), "not valid JSON");
  ExpectFormatError("header length larger than the file", Build(tensor_a, eight, 1000),
                    "header length 1000");
  ExpectFormatError("header length over the limit", Build(tensor_a, eight, uint64_t{1} << 40),
                    "limit");
  ExpectFormatError("header length 2^64 - 1", Build(tensor_a, eight, ~uint64_t{0}), "limit");
  ExpectFormatError("header not JSON", Build("this is not json", ""), "not valid JSON");
  ExpectFormatError("header cut short", Build(tensor_a.substr(0, 30), eight), "not valid JSON");
  ExpectFormatError("header followed by junk", Build(tensor_a + "x", eight), "not valid JSON");
  ExpectFormatError("header an array", Build("[1, 2, 3]", ""), "not an object");
  ExpectFormatError("header a string", Build(R"("abc")", ""), "not an object");
  ExpectFormatError("header not UTF-8", Build("{\"\xff\":1}", ""), "not valid JSON");
  ExpectFormatError("metadata an array", Build(R"({"__metadata__":[1]})", ""), "__metadata__");
  ExpectFormatError("metadata value a number", Build(R"({"__metadata__":{"k":1}})", ""), "\"k\"");
  ExpectFormatError("duplicate tensor",
                    Build(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                          R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                          eight),
                    "repeats the key \"a\"");
  ExpectFormatError("duplicate field",
                    Build(one(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8],)"
                              R"("data_offsets":[0,8]})"),
                          eight),
                    "repeats the key \"data_offsets\"");
  ExpectFormatError("entry not an object", Build(one("5"), ""), "tensor \"a\"");
  ExpectFormatError("dtype missing", Build(one(R"({"shape":[2],"data_offsets":[0,8]})"), eight),
                    "missing \"dtype\"");
  ExpectFormatError("unknown field",
                    Build(one(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1})"), eight),
                    "unexpected key \"x\"");
  ExpectFormatError("dtype not a string",
                    Build(one(R"({"dtype":1,"shape":[2],"data_offsets":[0,8]})"), eight), "dtype");
  ExpectFormatError(
      "unknown dtype",
      Build(R"({"weights.3":{"dtype":"F16","shape":[4],"data_offsets":[0,8]}})", eight),
      "tensor \"weights.3\": unsupported dtype \"F16\"");
  ExpectFormatError("shape not an array",
                    Build(one(R"({"dtype":"F32","shape":2,"data_offsets":[0,8]})"), eight),
                    "shape");
  ExpectFormatError("negative shape",
                    Build(one(R"({"dtype":"F32","shape":[-2],"data_offsets":[0,8]})"), eight),
                    "non-negative");
  ExpectFormatError("fractional shape",
                    Build(one(R"({"dtype":"F32","shape":[2.0],"data_offsets":[0,8]})"), eight),
                    "non-negative");
  ExpectFormatError("shape product overflows",
                    Build(one(R"({"dtype":"F32","shape":[4294967296,4294967296,16],)"
                              R"("data_offsets":[0,8]})"),
                          eight),
                    "more than 2^64");
  ExpectFormatError("offsets not a pair",
                    Build(one(R"({"dtype":"F32","shape":[2],"data_offsets":[0]})"), eight),
                    "data_offsets");
  ExpectFormatError("negative offset",
                    Build(one(R"({"dtype":"F32","shape":[2],"data_offsets":[-8,0]})"), eight),
                    "data_offsets");
  ExpectFormatError("offsets out of range",
                    Build(one(R"({"dtype":"F32","shape":[2],"data_offsets":[100,108]})"), eight),
                    "run past the end");
  ExpectFormatError("begin after end",
                    Build(one(R"({"dtype":"F32","shape":[0],"data_offsets":[8,0]})"), eight),
                    "begin > end");
  ExpectFormatError("byte count != shape x dtype",
                    Build(one(R"({"dtype":"F32","shape":[3],"data_offsets":[0,8]})"), eight),
                    "needs 12");
  ExpectFormatError("overlapping tensors",
                    Build(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                          R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                          kSmallData),
                    "overlap");
  ExpectFormatError("hole between tensors",
                    Build(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                          R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                          kSmallData),
                    "belong to no tensor");
  ExpectFormatError("trailing bytes", Build(kSmallHeader, kSmallData + "junk"),
                    "belong to no tensor");
  ExpectFormatError("data section truncated",
                    Build(kSmallHeader, kSmallData.substr(0, kSmallData.size() - 2)),
                    "run past the end");

  std::mt19937 rng(1234);
  std::string garbage(256, '\0');
  for (char& c : garbage) c = static_cast<char>(rng());
  ExpectFormatError("random bytes", garbage);
}

// A file written by us, cut at every length, is rejected: the header length, the tiling of the
// data section and the JSON syntax leave no prefix that parses.
TEST_F(SafetensorsTest, RejectsEveryTruncation) {
  const std::vector<float> x{1, 2, 3};
  const std::vector<int64_t> n{5};
  const std::string path = Path("full.safetensors");
  WriteSafetensors(path, {{"k", "v"}},
                   {{"x", DType::kF32, {3}, x.data()}, {"n", DType::kI64, {1}, n.data()}});
  const std::string full = ReadAll(path);
  for (size_t length = 0; length < full.size(); ++length) {
    ExpectFormatError("cut at " + std::to_string(length), full.substr(0, length));
  }
}

// Flipping any byte either leaves a valid file or gives a titans::Error: never a crash, never
// another exception type (run this under ASan to check for out-of-bounds reads).
TEST_F(SafetensorsTest, FlippedBytesGiveErrorsNotCrashes) {
  const std::string full = Build(kSmallHeader, kSmallData);
  const std::string path = Path("flipped.safetensors");
  int rejected = 0;
  for (size_t i = 0; i < full.size(); ++i) {
    for (int mask : {0x01, 0x20, 0xff}) {
      std::string bytes = full;
      bytes[i] = static_cast<char>(bytes[i] ^ mask);
      WriteAll(path, bytes);
      try {
        const SafetensorsFile file = SafetensorsFile::Open(path);
        for (const TensorRecord& t : file.tensors()) {
          for (std::byte b : t.bytes) (void)b;  // every record points inside the mapping
        }
      } catch (const Error& e) {
        EXPECT_TRUE(e.code() == ErrorCode::kFormat) << e.what();
        ++rejected;
      }
    }
  }
  EXPECT_GT(rejected, 0);
}

}  // namespace
}  // namespace titans::io
