// safetensors reader (mmap, validate everything first) and atomic writer. See safetensors.hpp.
#include "io/safetensors.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <utility>

#include "io/json.hpp"
#include "titans/error.hpp"

namespace titans::io {

// The file stores little-endian integers and floats; we copy them byte for byte.
static_assert(std::endian::native == std::endian::little,
              "safetensors IO assumes a little-endian host");

namespace {

using Json = nlohmann::ordered_json;  // keeps the header's tensor order (the file's order)

// The reference implementation's limit: a larger header is a corrupt length field, not a file
// we want to parse.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
// The data section starts at a multiple of this (header padded with spaces), so mapped tensors
// of every supported dtype are naturally aligned.
constexpr uint64_t kAlignment = 8;

[[noreturn]] void Fail(ErrorCode code, const std::string& path, const std::string& problem) {
  throw Error(code, path + ": " + problem);
}

[[noreturn]] void FailErrno(const std::string& path, const std::string& action) {
  Fail(ErrorCode::kIo, path, action + ": " + std::strerror(errno));
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::optional<DType> ParseDType(const std::string& s) {
  for (DType d : {DType::kF32, DType::kF64, DType::kI32, DType::kI64, DType::kBF16}) {
    if (s == ToString(d)) return d;
  }
  return std::nullopt;
}

// Element count of `shape`, or nullopt if it overflows uint64 (no real file is that large).
std::optional<uint64_t> Elements(const std::vector<int64_t>& shape) {
  uint64_t n = 1;
  for (int64_t dim : shape) {
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(dim), &n)) return std::nullopt;
  }
  return n;
}

// Owns a POSIX file descriptor.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  // Closes now and reports the error (a failed close can be the first sign of a lost write).
  int Close() { return ::close(std::exchange(fd_, -1)); }

 private:
  int fd_;
};

// Parses the header JSON, rejecting duplicate keys at any depth: nlohmann keeps the last one
// silently, and a repeated tensor name or "data_offsets" makes the file ambiguous.
Json ParseHeader(const std::string& path, const char* begin, const char* end) {
  std::vector<std::set<std::string>> open_objects;
  auto reject_duplicates = [&](int, Json::parse_event_t event, Json& parsed) {
    if (event == Json::parse_event_t::object_start) {
      open_objects.emplace_back();
    } else if (event == Json::parse_event_t::object_end) {
      open_objects.pop_back();
    } else if (event == Json::parse_event_t::key) {
      const std::string& key = parsed.get_ref<const std::string&>();
      if (!open_objects.back().insert(key).second) {
        Fail(ErrorCode::kFormat, path, "header repeats the key " + Quoted(key));
      }
    }
    return true;
  };
  // Nesting first: parsing, copying and destroying a deeply nested value recurse.
  CheckJsonDepth(std::string_view(begin, static_cast<size_t>(end - begin)), path + ": header");
  try {
    return Json::parse(begin, end, reject_duplicates);
  } catch (const Json::exception& e) {
    Fail(ErrorCode::kFormat, path, "header is not valid JSON: " + Printable(e.what(), 500));
  }
}

// Reads a JSON integer that must be >= 0 and fit int64 (shapes and offsets).
std::optional<int64_t> NonNegative(const Json& j) {
  if (!j.is_number_unsigned()) return std::nullopt;
  const uint64_t v = j.get<uint64_t>();
  if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
  return static_cast<int64_t>(v);
}

// One header entry {"dtype", "shape", "data_offsets"} checked against the data section.
TensorRecord ParseTensor(const std::string& path, const std::string& name, const Json& entry,
                         std::span<const std::byte> data) {
  const std::string where = "tensor " + Quoted(name);
  auto fail = [&](const std::string& problem) {
    Fail(ErrorCode::kFormat, path, where + ": " + problem);
  };
  if (!entry.is_object()) {
    fail("entry is a JSON " + std::string(entry.type_name()) + ", not an object");
  }
  for (const auto& [key, value] : entry.items()) {
    if (key != "dtype" && key != "shape" && key != "data_offsets") {
      fail("unexpected key " + Quoted(key));
    }
  }
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    if (!entry.contains(key)) fail(std::string("missing \"") + key + "\"");
  }

  TensorRecord t;
  t.name = name;
  const Json& dtype = entry["dtype"];
  if (!dtype.is_string()) fail("dtype is not a string");
  const std::optional<DType> parsed = ParseDType(dtype.get<std::string>());
  if (!parsed) fail("unsupported dtype " + Shown(dtype) + " (supported: F32, F64, I32, I64)");
  t.dtype = *parsed;

  const Json& shape = entry["shape"];
  if (!shape.is_array()) fail("shape is not an array");
  for (const Json& dim : shape) {
    const std::optional<int64_t> v = NonNegative(dim);
    if (!v) fail("shape " + Shown(shape) + " has an entry that is not a non-negative integer");
    t.shape.push_back(*v);
  }

  const Json& offsets = entry["data_offsets"];
  std::optional<int64_t> begin, end;
  if (offsets.is_array() && offsets.size() == 2) {
    begin = NonNegative(offsets[0]), end = NonNegative(offsets[1]);
  }
  if (!begin || !end) {
    fail("data_offsets " + Shown(offsets) + " is not [begin, end] of non-negative integers");
  }
  if (*begin > *end) fail("data_offsets " + Shown(offsets) + " has begin > end");
  if (static_cast<uint64_t>(*end) > data.size()) {
    fail("data_offsets " + Shown(offsets) + " run past the end of the " +
         std::to_string(data.size()) + "-byte data section (file truncated?)");
  }
  const uint64_t bytes = static_cast<uint64_t>(*end - *begin);
  const std::optional<uint64_t> elements = Elements(t.shape);
  uint64_t needed = 0;
  const bool overflow = !elements || __builtin_mul_overflow(*elements, DTypeSize(t.dtype), &needed);
  if (overflow || needed != bytes) {
    fail("data_offsets " + Shown(offsets) + " span " + std::to_string(bytes) +
         " bytes, but shape " + ShapeString(t.shape) + " of " + ToString(t.dtype) + " needs " +
         (overflow ? std::string("more than 2^64") : std::to_string(needed)));
  }
  t.bytes = data.subspan(static_cast<size_t>(*begin), static_cast<size_t>(bytes));
  return t;
}

// The tensors must tile the data section exactly, in offset order: no overlap (one byte read as
// two tensors), no hole and no trailing bytes (data no tensor accounts for). This is the rule
// of the reference implementation, so files we accept are files it accepts.
void CheckTiling(const std::string& path, const std::vector<TensorRecord>& tensors,
                 std::span<const std::byte> data) {
  std::vector<const TensorRecord*> by_offset;
  by_offset.reserve(tensors.size());
  for (const TensorRecord& t : tensors) by_offset.push_back(&t);
  auto begin_of = [&](const TensorRecord* t) {
    return static_cast<size_t>(t->bytes.data() - data.data());
  };
  std::sort(by_offset.begin(), by_offset.end(), [&](const TensorRecord* a, const TensorRecord* b) {
    return std::pair(begin_of(a), a->bytes.size()) < std::pair(begin_of(b), b->bytes.size());
  });
  size_t covered = 0;  // data bytes [0, covered) belong to the tensors seen so far
  const TensorRecord* previous = nullptr;
  for (const TensorRecord* t : by_offset) {
    const size_t begin = begin_of(t);
    if (begin < covered) {
      Fail(ErrorCode::kFormat, path,
           "tensors " + Quoted(previous->name) + " and " + Quoted(t->name) + " overlap");
    }
    if (begin > covered) {
      Fail(ErrorCode::kFormat, path,
           "data bytes [" + std::to_string(covered) + ", " + std::to_string(begin) +
               ") before tensor " + Quoted(t->name) + " belong to no tensor");
    }
    covered = begin + t->bytes.size();
    previous = t;
  }
  if (covered != data.size()) {
    Fail(ErrorCode::kFormat, path,
         std::to_string(data.size() - covered) +
             " bytes at the end of the data section belong to no tensor");
  }
}

// The temporary files this process is writing (full names as TempFile builds them), so that
// RemoveStaleTempFiles never takes one of this process's own.
std::mutex active_temp_mutex;
std::set<std::string> active_temp_files;

void SetActive(const std::string& path, bool active) {
  const std::lock_guard<std::mutex> lock(active_temp_mutex);
  if (active) {
    active_temp_files.insert(path);
  } else {
    active_temp_files.erase(path);
  }
}

// "<pid>.<n>" with both decimal (no sign, no leading '+'), or "<pid>.<n>.tmp.<pid>.<n>" (the
// temporary file of a write to a file that OutputSet staged); the first pid, or 0 if `rest` is
// neither.
pid_t ParseTempSuffix(std::string_view rest) {
  const size_t dot = rest.find('.');
  if (dot == 0 || dot == std::string_view::npos || dot + 1 == rest.size() || dot > 10) return 0;
  size_t end = rest.find('.', dot + 1);
  if (end == std::string_view::npos) {
    end = rest.size();
  } else if (!rest.substr(end).starts_with(".tmp.") || ParseTempSuffix(rest.substr(end + 5)) == 0) {
    return 0;
  }
  int64_t pid = 0;
  for (size_t i = 0; i < end; ++i) {
    if (i == dot) continue;
    if (rest[i] < '0' || rest[i] > '9') return 0;
    if (i < dot) pid = pid * 10 + (rest[i] - '0');
  }
  return pid > 0 && pid <= std::numeric_limits<pid_t>::max() ? static_cast<pid_t>(pid) : 0;
}

// Removes the temporary files "<target>.tmp.<pid>.<n>" that a save to `target` killed before
// its rename left behind: those of a process that no longer exists (kill(pid, 0) fails with
// ESRCH) and those with this process's pid that it is not writing (left by an earlier process
// with the same pid). A live writer's file is never touched (a pid of another user answers
// EPERM: alive). Best effort: what cannot be read or removed is left alone.
void RemoveStaleTempFiles(const std::string& target) {
  const std::filesystem::path target_path(target);
  std::string dir = target_path.parent_path().string();
  if (dir.empty()) dir = ".";
  const std::string prefix = target_path.filename().string() + ".tmp.";
  DIR* listing = ::opendir(dir.c_str());
  if (listing == nullptr) return;
  const pid_t self = ::getpid();
  while (const dirent* entry = ::readdir(listing)) {
    const std::string_view name(entry->d_name);
    if (!name.starts_with(prefix)) continue;
    const std::string_view rest = name.substr(prefix.size());
    const pid_t pid = ParseTempSuffix(rest);
    if (pid == 0) continue;
    const std::string path = target + ".tmp." + std::string(rest);
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    bool stale = false;
    if (pid == self) {
      const std::lock_guard<std::mutex> lock(active_temp_mutex);
      stale = active_temp_files.count(path) == 0;
    } else {
      stale = ::kill(pid, 0) != 0 && errno == ESRCH;
    }
    if (stale) ::unlink(path.c_str());
  }
  ::closedir(listing);
}

// Distinct temporary names for concurrent writers in this process: "<target>.tmp.<pid>.<n>".
std::atomic<uint64_t> temp_counter{0};
std::string TempName(const std::string& target) {
  return target + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(temp_counter++);
}

// Makes a rename into the directory of `target` durable (otherwise a crash may lose it).
void SyncDirectoryOf(const std::string& target) {
  std::string dir = std::filesystem::path(target).parent_path().string();
  if (dir.empty()) dir = ".";
  Fd dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir_fd.get() < 0 || ::fsync(dir_fd.get()) != 0) {
    FailErrno(target, "written, but the directory " + dir + " could not be synced");
  }
}

// A temporary file next to `target` that becomes `target` on Commit() and is removed otherwise,
// so a failed or interrupted write never leaves a half-written `target` or stray files. A
// process killed while writing cannot remove its file: the next TempFile for the same target
// does (RemoveStaleTempFiles).
class TempFile {
 public:
  explicit TempFile(std::string target)
      : target_(std::move(target)), path_(TempName(target_)), fd_(Create(target_, path_)) {
    if (fd_.get() < 0) {
      const int error = errno;
      SetActive(path_, false);
      errno = error;
      FailErrno(path_, "cannot create temporary file");
    }
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() {
    if (!renamed_) ::unlink(path_.c_str());  // fd_ closes after; unlinking an open file is fine
    SetActive(path_, false);
  }

  void Write(const void* data, size_t size) {
    const char* p = static_cast<const char*>(data);
    while (size > 0) {  // write() may write less than asked (signals, large sizes)
      const ssize_t n = ::write(fd_.get(), p, size);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) FailErrno(path_, "write failed");
      p += n;
      size -= static_cast<size_t>(n);
    }
  }

  // fsync before rename: otherwise a crash can leave `target` renamed but with empty contents.
  // fsync the directory after: otherwise the rename itself may be lost.
  void Commit() {
    if (::fsync(fd_.get()) != 0) FailErrno(path_, "fsync failed");
    if (fd_.Close() != 0) FailErrno(path_, "close failed");
    if (::rename(path_.c_str(), target_.c_str()) != 0) {
      FailErrno(target_, "cannot rename " + path_ + " to it");
    }
    renamed_ = true;
    SetActive(path_, false);
    SyncDirectoryOf(target_);
  }

 private:
  // Registers `path` as this process's, removes stale temporary files of `target`, creates
  // `path`; the descriptor or -1 (errno set).
  static int Create(const std::string& target, const std::string& path) {
    SetActive(path, true);
    RemoveStaleTempFiles(target);
    return ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  }

  std::string target_, path_;
  Fd fd_;
  bool renamed_ = false;
};

}  // namespace

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return 4;
    case DType::kF64:
      return 8;
    case DType::kI32:
      return 4;
    case DType::kI64:
      return 8;
    case DType::kBF16:
      return 2;
  }
  return 0;
}

const char* ToString(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kF64:
      return "F64";
    case DType::kI32:
      return "I32";
    case DType::kI64:
      return "I64";
    case DType::kBF16:
      return "BF16";
  }
  return "?";
}

// A read-only private mapping of the whole file; the path is kept for error messages.
// If another process truncates the file while it is mapped, reading the lost pages faults
// (SIGBUS); the engine never does that to its own files, which it replaces by rename.
struct SafetensorsFile::Mapping {
  std::string path;
  const std::byte* data = nullptr;
  size_t size = 0;
  bool mapped = false;  // false: `data` is the caller's buffer (FromBytes), not a mapping

  explicit Mapping(std::string file_path) : path(std::move(file_path)) {}
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    if (mapped && data != nullptr) ::munmap(const_cast<std::byte*>(data), size);
  }
};

SafetensorsFile::SafetensorsFile(SafetensorsFile&&) noexcept = default;
SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&&) noexcept = default;
SafetensorsFile::~SafetensorsFile() = default;

SafetensorsFile SafetensorsFile::Open(const std::string& path) {
  // stat before open: opening a FIFO for reading blocks until a writer appears (forever, for a
  // path given by mistake), and opening a device can have effects of its own.
  struct stat before {};
  if (::stat(path.c_str(), &before) != 0) FailErrno(path, "cannot open");
  if (!S_ISREG(before.st_mode)) Fail(ErrorCode::kIo, path, "not a regular file");
  // O_NONBLOCK as well: should the path be replaced by a FIFO in between, open still returns
  // (and fstat refuses it). It changes nothing for a regular file.
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (fd.get() < 0) FailErrno(path, "cannot open");
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) FailErrno(path, "cannot stat");
  if (!S_ISREG(st.st_mode)) Fail(ErrorCode::kIo, path, "not a regular file");
  const auto size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    Fail(ErrorCode::kFormat, path,
         "file is " + std::to_string(size) + " bytes, too short for the 8-byte header length");
  }

  SafetensorsFile file;
  file.mapping_ = std::make_unique<Mapping>(path);
  void* addr = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd.get(), 0);
  if (addr == MAP_FAILED) FailErrno(path, "cannot map");
  file.mapping_->data = static_cast<const std::byte*>(addr);
  file.mapping_->size = size;
  file.mapping_->mapped = true;
  file.Parse();
  return file;
}

SafetensorsFile SafetensorsFile::FromBytes(std::span<const std::byte> bytes,
                                           const std::string& name) {
  if (bytes.size() < 8) {
    Fail(ErrorCode::kFormat, name,
         std::to_string(bytes.size()) + " bytes, too short for the 8-byte header length");
  }
  SafetensorsFile file;
  file.mapping_ = std::make_unique<Mapping>(name);
  file.mapping_->data = bytes.data();
  file.mapping_->size = bytes.size();
  file.Parse();
  return file;
}

void SafetensorsFile::Parse() {
  const std::string& path = mapping_->path;
  const uint64_t size = mapping_->size;
  const std::span<const std::byte> bytes(mapping_->data, mapping_->size);
  SafetensorsFile& file = *this;

  // [0, 8): header length N (u64 LE); [8, 8 + N): JSON header; [8 + N, size): tensor data.
  uint64_t header_size = 0;
  std::memcpy(&header_size, bytes.data(), 8);
  if (header_size > kMaxHeaderBytes) {
    Fail(ErrorCode::kFormat, path,
         "header length " + std::to_string(header_size) + " exceeds the limit of " +
             std::to_string(kMaxHeaderBytes) + " bytes");
  }
  if (header_size > size - 8) {
    Fail(ErrorCode::kFormat, path,
         "header length " + std::to_string(header_size) + " exceeds the " +
             std::to_string(size - 8) + " bytes after it (file truncated?)");
  }
  const auto* text = reinterpret_cast<const char*>(bytes.data() + 8);
  const Json header = ParseHeader(path, text, text + header_size);
  if (!header.is_object()) {
    Fail(ErrorCode::kFormat, path,
         "header is a JSON " + std::string(header.type_name()) + ", not an object");
  }

  const std::span<const std::byte> data = bytes.subspan(8 + header_size);
  for (const auto& [key, value] : header.items()) {
    if (key != "__metadata__") {
      file.tensors_.push_back(ParseTensor(path, key, value, data));
      continue;
    }
    if (!value.is_object()) Fail(ErrorCode::kFormat, path, "__metadata__ is not a JSON object");
    for (const auto& [name, entry] : value.items()) {
      if (!entry.is_string()) {
        Fail(ErrorCode::kFormat, path, "__metadata__ " + Quoted(name) + " is not a string");
      }
      file.metadata_.emplace(name, entry.get<std::string>());
    }
  }
  CheckTiling(path, file.tensors_, data);
}

const TensorRecord* SafetensorsFile::Find(const std::string& name) const {
  const auto it = std::find_if(tensors_.begin(), tensors_.end(),
                               [&](const TensorRecord& t) { return t.name == name; });
  return it == tensors_.end() ? nullptr : &*it;
}

void SafetensorsFile::ReadF32(const std::string& name, const std::vector<int64_t>& shape,
                              std::span<float> out) const {
  const std::string& path = mapping_->path;
  const std::string expected = "expected F32 " + ShapeString(shape);
  const TensorRecord* t = Find(name);
  if (t == nullptr) {
    Fail(ErrorCode::kMismatch, path, "no tensor " + Quoted(name) + " (" + expected + ")");
  }
  if (t->dtype != DType::kF32 || t->shape != shape) {
    Fail(ErrorCode::kMismatch, path,
         "tensor " + Quoted(name) + " is " + ToString(t->dtype) + " " + ShapeString(t->shape) +
             ", " + expected);
  }
  if (out.size_bytes() != t->bytes.size()) {
    Fail(ErrorCode::kInvalidArgument, path,
         "tensor " + Quoted(name) + " " + ShapeString(shape) + " has " +
             std::to_string(t->bytes.size() / sizeof(float)) + " values, the output buffer " +
             std::to_string(out.size()));
  }
  if (!out.empty()) std::memcpy(out.data(), t->bytes.data(), t->bytes.size());
}

namespace {

// The header (padded so that the data starts at a multiple of kAlignment) and every tensor's
// byte count, after checking the tensors; `path` names the output in messages.
std::string EncodeHeader(const std::string& path,
                         const std::map<std::string, std::string>& metadata,
                         const std::vector<TensorToWrite>& tensors, std::vector<size_t>& sizes) {
  auto invalid = [&](const std::string& problem) {
    Fail(ErrorCode::kInvalidArgument, path, problem);
  };
  Json header = Json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const TensorToWrite& t : tensors) {
    if (t.name == "__metadata__" || header.contains(t.name)) {
      invalid("tensor name " + Quoted(t.name) + " is taken");
    }
    if (std::any_of(t.shape.begin(), t.shape.end(), [](int64_t d) { return d < 0; })) {
      invalid("tensor " + Quoted(t.name) + " has a negative dimension in " + ShapeString(t.shape));
    }
    const std::optional<uint64_t> elements = Elements(t.shape);
    uint64_t bytes = 0;
    if (!elements || __builtin_mul_overflow(*elements, DTypeSize(t.dtype), &bytes)) {
      invalid("tensor " + Quoted(t.name) + " shape " + ShapeString(t.shape) + " is too large");
    }
    if (bytes > 0 && t.data == nullptr) invalid("tensor " + Quoted(t.name) + " has no data");
    header[t.name] = Json{{"dtype", ToString(t.dtype)},
                          {"shape", t.shape},
                          {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    sizes.push_back(static_cast<size_t>(bytes));
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const Json::exception& e) {  // a name or metadata string that is not UTF-8
    invalid(std::string("cannot encode the header: ") + e.what());
  }
  text.append((kAlignment - text.size() % kAlignment) % kAlignment, ' ');  // 8 + N = 0 mod 8
  return text;
}

}  // namespace

void WriteSafetensors(const std::string& path, const std::map<std::string, std::string>& metadata,
                      const std::vector<TensorToWrite>& tensors) {
  // Everything is checked and the header built before the file is created.
  std::vector<size_t> sizes;  // bytes of each tensor
  const std::string text = EncodeHeader(path, metadata, tensors, sizes);
  const uint64_t header_size = text.size();

  TempFile file(path);
  file.Write(&header_size, sizeof header_size);
  file.Write(text.data(), text.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (sizes[i] > 0) file.Write(tensors[i].data, sizes[i]);
  }
  file.Commit();
}

std::vector<std::byte> SerializeSafetensors(const std::string& name,
                                            const std::map<std::string, std::string>& metadata,
                                            const std::vector<TensorToWrite>& tensors) {
  std::vector<size_t> sizes;
  const std::string text = EncodeHeader(name, metadata, tensors, sizes);
  const uint64_t header_size = text.size();
  size_t total = sizeof header_size + text.size();
  for (size_t bytes : sizes) total += bytes;
  std::vector<std::byte> out(total);
  std::byte* p = out.data();
  std::memcpy(p, &header_size, sizeof header_size);
  p += sizeof header_size;
  std::memcpy(p, text.data(), text.size());
  p += text.size();
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (sizes[i] > 0) std::memcpy(p, tensors[i].data, sizes[i]);
    p += sizes[i];
  }
  return out;
}

void WriteFileAtomically(const std::string& path, std::string_view contents) {
  TempFile file(path);
  file.Write(contents.data(), contents.size());
  file.Commit();
}

OutputSet::~OutputSet() {
  for (const Staged& s : staged_) {
    if (!s.renamed) ::unlink(s.path.c_str());
    SetActive(s.path, false);
  }
}

const std::string& OutputSet::Stage(const std::string& target) {
  struct stat st {};
  if (::stat(target.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    Fail(ErrorCode::kIo, target, "is a directory");
  }
  std::string path = TempName(target);
  SetActive(path, true);  // so that this process's own saves to `target` leave it alone
  staged_.push_back({std::move(path), target});
  return staged_.back().path;
}

void OutputSet::Commit() {
  for (Staged& s : staged_) {
    if (::rename(s.path.c_str(), s.target.c_str()) != 0) {
      FailErrno(s.target, "cannot rename " + s.path + " to it");
    }
    s.renamed = true;
    SetActive(s.path, false);
  }
  for (const Staged& s : staged_) SyncDirectoryOf(s.target);
}

}  // namespace titans::io
