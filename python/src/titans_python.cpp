// titans._titans: the Python extension of the titans package (python/titans/__init__.py
// re-exports it; docs/PYTHON.md documents it, python/titans/_titans.pyi types it).
//
// It binds the public C++ API (include/titans/*.hpp) directly: Model, Session, SessionOptions,
// NeuralMemory, MemorySession and titans::Error. Conventions:
//   - every engine call runs with the GIL released, so Python threads running different
//     sessions compute in parallel; a session object holds a mutex, so that two Python threads
//     calling the same session take turns instead of racing (the engine allows one thread per
//     session at a time);
//   - inputs are checked here before the engine sees them (dtype, rank, width): tokens are any
//     integer array, list or torch tensor [n] (int32 C-contiguous arrays are used in place,
//     other integer types are converted); embeddings and memory inputs are float32 [n, d]
//     (C-contiguous float32 arrays and CPU tensors are used in place; lists are converted,
//     arrays of another dtype are refused);
//   - titans::Error becomes titans.Error, one subclass per ErrorCode, with the engine's message.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "titans/titans.h"
#include "titans/titans.hpp"

namespace py = pybind11;
using namespace pybind11::literals;  // NOLINT(google-build-using-namespace): "name"_a

namespace {

using titans::Error;
using titans::ErrorCode;

// ---------------------------------------------------------------------------------------------
// Errors

constexpr int kErrorCodes = 6;  // titans::ErrorCode's values, kInvalidArgument .. kNumerical
// The Python exception class of each ErrorCode, created at import; they live as long as the
// module (references are owned by the module's attributes, never released).
std::array<PyObject*, kErrorCodes> g_error_class{};

[[noreturn]] void Throw(ErrorCode code, const std::string& message) { throw Error(code, message); }

std::string Shape(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) {
    s += (i ? ", " : "") + std::to_string(a.shape(i));
  }
  return s + (a.ndim() == 1 ? ",)" : ")");
}

std::string DtypeName(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

// Raises titans::Error as the Python class of its code, with the engine's message and `code`.
void RaiseError(const Error& e) {
  PyObject* cls = g_error_class[static_cast<size_t>(e.code())];
  py::object instance = py::reinterpret_borrow<py::object>(cls)(e.what());
  instance.attr("code") = e.code();
  PyErr_SetObject(cls, instance.ptr());
}

// ---------------------------------------------------------------------------------------------
// Inputs

// `obj` as a numpy array without a copy where it can be: an ndarray as it is, a torch tensor
// (on the CPU) as numpy's view of it (after detach(), so that tensors requiring grad work too),
// anything else through numpy.asarray. numpy and torch raise their own errors here (a CUDA
// tensor, a ragged list).
py::array AsArray(py::handle obj) {
  if (py::isinstance<py::array>(obj)) return py::reinterpret_borrow<py::array>(obj);
  py::object o = py::reinterpret_borrow<py::object>(obj);
  if (py::hasattr(o, "detach") && py::hasattr(o, "numpy")) o = o.attr("detach")();
  return py::module_::import("numpy").attr("asarray")(o);
}

bool InPlace(const py::array& a) {
  constexpr int kFlags = static_cast<int>(py::array::c_style) |
                         static_cast<int>(py::detail::npy_api::NPY_ARRAY_ALIGNED_);
  return (a.flags() & kFlags) == kFlags;
}

// A token sequence [n] as int32: a C-contiguous int32 array is read in place (held, not
// copied), a list of Python ints and any other integer array are converted into copy_.
class Tokens {
 public:
  explicit Tokens(py::handle obj) {
    if (PyList_Check(obj.ptr()) && FromList(obj)) return;
    py::array a = AsArray(obj);
    if (a.ndim() != 1) {
      Throw(ErrorCode::kInvalidArgument, "tokens must be 1-D [n], got shape " + Shape(a));
    }
    const char kind = a.dtype().kind();
    if (kind != 'i' && kind != 'u') {
      Throw(ErrorCode::kInvalidArgument,
            "tokens must be integers, got dtype " + DtypeName(a) + " (shape " + Shape(a) + ")");
    }
    if (py::isinstance<py::array_t<int32_t>>(a) && InPlace(a)) {
      data_ = static_cast<const int32_t*>(a.data());
      size_ = static_cast<size_t>(a.shape(0));
      keep_ = std::move(a);
      return;
    }
    // Another integer type, or strided: widen to int64 (numpy's cast), then narrow with a
    // check, so that no value wraps into a valid token.
    const py::array_t<int64_t, py::array::c_style | py::array::forcecast> wide(a);
    const int64_t* v = wide.data();
    copy_.resize(static_cast<size_t>(wide.shape(0)));
    for (size_t i = 0; i < copy_.size(); ++i) copy_[i] = Narrow(v[i], i);
    data_ = copy_.data();
    size_ = copy_.size();
  }

  std::span<const int32_t> span() const { return {data_, size_}; }

 private:
  // The fast path for a list of Python ints (one-token decode: session.forward([token]));
  // false, with nothing taken, when an item is anything else (numpy then converts the list).
  bool FromList(py::handle list) {
    const Py_ssize_t n = PyList_GET_SIZE(list.ptr());
    copy_.resize(static_cast<size_t>(n));
    for (Py_ssize_t i = 0; i < n; ++i) {
      PyObject* item = PyList_GET_ITEM(list.ptr(), i);
      if (!PyLong_Check(item) || PyBool_Check(item)) {
        copy_.clear();
        return false;
      }
      int overflow = 0;
      const long long value = PyLong_AsLongLongAndOverflow(item, &overflow);
      const int64_t wide = overflow > 0   ? std::numeric_limits<int64_t>::max()
                           : overflow < 0 ? std::numeric_limits<int64_t>::min()
                                          : value;
      copy_[static_cast<size_t>(i)] = Narrow(wide, static_cast<size_t>(i));
    }
    data_ = copy_.data();
    size_ = copy_.size();
    return true;
  }

  static int32_t Narrow(int64_t value, size_t index) {
    if (value < std::numeric_limits<int32_t>::min() ||
        value > std::numeric_limits<int32_t>::max()) {
      Throw(ErrorCode::kInvalidArgument, "token " + std::to_string(value) + " at index " +
                                             std::to_string(index) +
                                             " is outside the vocabulary (not even an int32)");
    }
    return static_cast<int32_t>(value);
  }

  py::object keep_;            // the caller's array, read in place
  std::vector<int32_t> copy_;  // or the converted tokens
  const int32_t* data_ = nullptr;
  size_t size_ = 0;
};

// Float32 rows [n, width]: a C-contiguous float32 array (or CPU tensor) is read in place; a
// strided float32 array is copied; a list is converted to float32; an array or tensor of
// another dtype is refused (converting float64 silently would hide a mistake, and costs a copy
// the caller should see).
class Rows {
 public:
  Rows(py::handle obj, int64_t width, const char* what) {
    py::array a = !py::isinstance<py::array>(obj) && !py::hasattr(obj, "dtype")
                      ? py::array(py::module_::import("numpy").attr("asarray")(obj, "float32"))
                      : AsArray(obj);
    if (!py::isinstance<py::array_t<float>>(a)) {
      Throw(ErrorCode::kInvalidArgument, std::string(what) + " must be float32, got dtype " +
                                             DtypeName(a) + " (convert with .astype(np.float32))");
    }
    if (a.ndim() != 2 || a.shape(1) != width) {
      Throw(ErrorCode::kInvalidArgument, std::string(what) + " must have shape [n, " +
                                             std::to_string(width) + "], got " + Shape(a));
    }
    if (!InPlace(a)) {
      a = py::array_t<float, py::array::c_style | py::array::forcecast>(a);
    }
    rows_ = a.shape(0);
    data_ = static_cast<const float*>(a.data());
    keep_ = std::move(a);
  }

  int64_t rows() const { return rows_; }
  std::span<const float> span(int64_t width) const {
    return {data_, static_cast<size_t>(rows_ * width)};
  }

 private:
  py::object keep_;
  const float* data_ = nullptr;
  int64_t rows_ = 0;
};

// A new float32 array [rows, cols] for the engine to write into.
py::array_t<float> Output(int64_t rows, int64_t cols) {
  return py::array_t<float>({static_cast<py::ssize_t>(rows), static_cast<py::ssize_t>(cols)});
}
std::span<float> Span(py::array_t<float>& a) {
  return {a.mutable_data(), static_cast<size_t>(a.size())};
}

// Configs cross as dicts (or JSON text), in the engine's JSON form (docs/FILE_FORMAT.md).
std::string ConfigText(const py::object& config) {
  if (py::isinstance<py::str>(config)) return config.cast<std::string>();
  return py::module_::import("json").attr("dumps")(config).cast<std::string>();
}
py::object ConfigDict(const std::string& json) {
  return py::module_::import("json").attr("loads")(json);
}

// Fills every tensor view of `views` from `tensors` (a mapping name -> float array of exactly
// that shape); a missing or extra name, or another shape, is kMismatch, as in a file.
void FillTensors(const std::vector<titans::TensorView>& views, const py::dict& tensors,
                 const std::string& what) {
  size_t used = 0;
  for (const titans::TensorView& view : views) {
    if (!tensors.contains(view.name)) {
      Throw(ErrorCode::kMismatch, what + ": tensor " + view.name + " is missing");
    }
    py::array a = AsArray(tensors[py::str(view.name)]);
    if (a.dtype().kind() != 'f') {
      Throw(ErrorCode::kInvalidArgument,
            what + ": tensor " + view.name + " must be floating point, got " + DtypeName(a));
    }
    const bool same_shape = a.ndim() == static_cast<py::ssize_t>(view.shape.size()) &&
                            std::equal(view.shape.begin(), view.shape.end(), a.shape(),
                                       [](int64_t want, py::ssize_t got) { return want == got; });
    if (!same_shape) {
      std::string want = "(";
      for (size_t i = 0; i < view.shape.size(); ++i) {
        want += (i ? ", " : "") + std::to_string(view.shape[i]);
      }
      Throw(ErrorCode::kMismatch,
            what + ": tensor " + view.name + " has shape " + Shape(a) + ", expected " + want + ")");
    }
    const py::array_t<float, py::array::c_style | py::array::forcecast> f(a);
    std::copy(f.data(), f.data() + f.size(), view.data);
    ++used;
  }
  if (used != tensors.size()) {
    for (const auto& item : tensors) {
      const std::string name = py::str(item.first);
      if (std::none_of(views.begin(), views.end(),
                       [&](const titans::TensorView& v) { return v.name == name; })) {
        Throw(ErrorCode::kMismatch, what + ": tensor " + name + " is not used by the config");
      }
    }
  }
}

// Every tensor of `views` as a new float32 array (a copy), by name.
py::dict TensorDict(const std::vector<titans::ConstTensorView>& views) {
  py::dict out;
  for (const titans::ConstTensorView& view : views) {
    const std::vector<py::ssize_t> shape(view.shape.begin(), view.shape.end());
    out[py::str(view.name)] = py::array_t<float>(shape, view.data);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Objects

struct PyModel {
  std::shared_ptr<const titans::Model> model;
};
struct PyMemory {
  std::shared_ptr<const titans::NeuralMemory> memory;
};

titans::SessionOptions Options(std::optional<titans::SessionOptions> options,
                               std::optional<int> threads) {
  titans::SessionOptions o = options.value_or(titans::SessionOptions{});
  if (threads) o.threads = *threads;
  return o;
}

// A Session with the lock that serialises the Python threads using it (the GIL is released
// during every engine call).
struct PySession {
  PySession(std::shared_ptr<const titans::Model> m, titans::Session s)
      : model(std::move(m)), session(std::move(s)) {}
  std::shared_ptr<const titans::Model> model;
  titans::Session session;
  std::mutex mutex;
};

struct PyMemorySession {
  PyMemorySession(std::shared_ptr<const titans::NeuralMemory> m, titans::MemorySession s)
      : memory(std::move(m)), session(std::move(s)) {}
  std::shared_ptr<const titans::NeuralMemory> memory;
  titans::MemorySession session;
  std::mutex mutex;
};

// Runs f() on the session with the GIL released, holding the session's lock.
template <class S, class F>
auto Compute(S& s, F&& f) {
  py::gil_scoped_release release;
  std::lock_guard<std::mutex> lock(s.mutex);
  return f();
}

std::string PathText(const std::filesystem::path& path) { return path.string(); }

// The WeightType named `name`, "f32" or "bf16" (titans::ToString); anything else is
// InvalidArgumentError (a ValueError) naming the function `what`.
titans::WeightType WeightTypeNamed(const std::string& name, const char* what) {
  for (const titans::WeightType type : {titans::WeightType::kF32, titans::WeightType::kBf16}) {
    if (name == titans::ToString(type)) return type;
  }
  Throw(ErrorCode::kInvalidArgument,
        std::string(what) + ": weights must be \"f32\" or \"bf16\", got \"" + name + "\"");
}

// `model` with its product matrices stored as `type`: `model` itself when it already stores them
// so, otherwise a converted copy (to bf16 the values are rounded; to f32 they are kept).
std::shared_ptr<const titans::Model> WithWeights(std::shared_ptr<const titans::Model> model,
                                                 titans::WeightType type) {
  if (model->weight_type() == type) return model;
  return std::make_shared<const titans::Model>(model->config(), model->weights(), type);
}

py::dict HealthDict(const titans::MemoryHealth& h) {
  return py::dict("position"_a = h.position, "weights_norm"_a = h.weights_norm,
                  "initial_norm"_a = h.initial_norm, "momentum_norm"_a = h.momentum_norm,
                  "finite"_a = h.finite, "all_zero"_a = h.all_zero);
}

// Session.generate's iterator: the same steps as Session::Generate and `titans generate`
// (tools/titans_cli.cpp): the prompt in pieces of at most 4096 tokens, then per new token:
// sample from the last logits with the seeded stream, yield it, and feed it back when the next
// token is asked for (so the last token is never fed, as in Session::Generate). The GIL is
// released for each step and taken back to yield.
class Generator {
 public:
  Generator(py::object owner, PySession& s, std::vector<int32_t> prompt, int max_new_tokens,
            titans::SamplerOptions sampler)
      : owner_(std::move(owner)),
        s_(s),
        prompt_(std::move(prompt)),
        max_new_tokens_(max_new_tokens),
        sampler_(sampler),
        rng_(sampler.seed) {}

  int32_t Next() {
    if (done_) throw py::stop_iteration();
    std::optional<int32_t> token;
    try {
      token = Compute(s_, [&]() -> std::optional<int32_t> { return Step(); });
    } catch (...) {
      done_ = true;  // a generator that raised is finished
      throw;
    }
    if (!token) {
      done_ = true;
      throw py::stop_iteration();
    }
    return *token;
  }

 private:
  // One step under the session's lock; nullopt when max_new_tokens are made.
  std::optional<int32_t> Step() {
    const size_t vocab = static_cast<size_t>(s_.model->config().vocab_size);
    if (!started_) {
      started_ = true;
      constexpr size_t kPromptPiece = 4096;  // as `titans generate`
      std::vector<float> logits;
      for (size_t at = 0; at < prompt_.size(); at += kPromptPiece) {
        const size_t n = std::min(kPromptPiece, prompt_.size() - at);
        logits.resize(n * vocab);
        s_.session.Forward(std::span<const int32_t>(prompt_.data() + at, n), logits);
      }
      if (!logits.empty()) {  // an empty prompt comes only with max_new_tokens = 0
        last_.assign(logits.end() - static_cast<std::ptrdiff_t>(vocab), logits.end());
      }
    } else if (made_ < max_new_tokens_) {
      s_.session.Forward(std::span<const int32_t>(&fed_, 1), last_);
    }
    if (made_ == max_new_tokens_) return std::nullopt;
    fed_ = titans::SampleToken(last_, sampler_, rng_);
    ++made_;
    return fed_;
  }

  py::object owner_;  // the Python Session, kept alive while the generator lives
  PySession& s_;
  std::vector<int32_t> prompt_;
  int max_new_tokens_;
  titans::SamplerOptions sampler_;
  std::mt19937_64 rng_;
  std::vector<float> last_;  // [V] the logits of the last token fed
  int32_t fed_ = 0;          // the last token made, fed at the next step
  int made_ = 0;
  bool started_ = false, done_ = false;
};

double Seconds(std::chrono::steady_clock::time_point from) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - from).count();
}

}  // namespace

PYBIND11_MODULE(_titans, m) {
  m.doc() = "titans._titans: the compiled part of the titans package (use `import titans`).";
  m.attr("__version__") = titans_version();

  // --- errors
  py::enum_<ErrorCode>(m, "ErrorCode", "The engine's error codes (titans::ErrorCode).")
      .value("INVALID_ARGUMENT", ErrorCode::kInvalidArgument)
      .value("CONFIG", ErrorCode::kConfig)
      .value("IO", ErrorCode::kIo)
      .value("FORMAT", ErrorCode::kFormat)
      .value("MISMATCH", ErrorCode::kMismatch)
      .value("NUMERICAL", ErrorCode::kNumerical);
  // The base class; InvalidArgumentError is also a ValueError and IoError an OSError, so that
  // code catching the built-in kinds works too.
  PyObject* base = PyErr_NewExceptionWithDoc(
      "titans.Error",
      "An error of the titans engine. `code` is its titans.ErrorCode; str() is the engine's "
      "message, which starts with the code's name.",
      PyExc_Exception, nullptr);
  m.attr("Error") = py::reinterpret_steal<py::object>(base);
  const struct {
    ErrorCode code;
    const char* name;
    PyObject* builtin;
    const char* doc;
  } kinds[kErrorCodes] = {
      {ErrorCode::kInvalidArgument, "InvalidArgumentError", PyExc_ValueError,
       "A bad value: a shape, dtype or size, a token outside the vocabulary, a NaN/Inf input, "
       "a bad option."},
      {ErrorCode::kConfig, "ConfigError", nullptr,
       "A configuration that is inconsistent or not supported."},
      {ErrorCode::kIo, "IoError", PyExc_OSError,
       "A file could not be opened, read, written or renamed."},
      {ErrorCode::kFormat, "FormatError", nullptr,
       "A file (or state bytes) is malformed, truncated or of an unknown version."},
      {ErrorCode::kMismatch, "MismatchError", nullptr,
       "A file is well formed but belongs to another configuration."},
      {ErrorCode::kNumerical, "NumericalError", nullptr,
       "A computation overflowed to NaN/Inf; the session must be reset or loaded."},
  };
  for (const auto& kind : kinds) {
    py::tuple bases = kind.builtin ? py::make_tuple(py::handle(base), py::handle(kind.builtin))
                                   : py::make_tuple(py::handle(base));
    PyObject* cls = PyErr_NewExceptionWithDoc((std::string("titans.") + kind.name).c_str(),
                                              kind.doc, bases.ptr(), nullptr);
    if (cls == nullptr) throw py::error_already_set();
    m.attr(kind.name) = py::reinterpret_steal<py::object>(cls);
    g_error_class[static_cast<size_t>(kind.code)] = cls;
  }
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Error& e) {
      RaiseError(e);
    }
  });

  // --- options
  py::class_<titans::SessionOptions>(m, "SessionOptions",
                                     "Options of a Session or MemorySession "
                                     "(titans::SessionOptions).")
      .def(py::init([](int threads, double min_flops_per_thread, bool adapt_threads) {
             return titans::SessionOptions{threads, min_flops_per_thread, adapt_threads};
           }),
           "threads"_a = 0,
           "min_flops_per_thread"_a = titans::SessionOptions{}.min_flops_per_thread,
           "adapt_threads"_a = titans::SessionOptions{}.adapt_threads)
      .def_readwrite("threads", &titans::SessionOptions::threads,
                     "OpenMP threads for this session's work; 0 = all (omp_get_max_threads()).")
      .def_readwrite("min_flops_per_thread", &titans::SessionOptions::min_flops_per_thread,
                     "A parallel region takes one thread per this many FLOPs of its work.")
      .def_readwrite("adapt_threads", &titans::SessionOptions::adapt_threads,
                     "Run each piece of work on the team or on one thread, whichever the session "
                     "measured faster (a busy core slows a team down); False: always the team.")
      .def("__repr__", [](const titans::SessionOptions& o) {
        return "SessionOptions(threads=" + std::to_string(o.threads) + ", min_flops_per_thread=" +
               py::repr(py::float_(o.min_flops_per_thread)).cast<std::string>() +
               ", adapt_threads=" + (o.adapt_threads ? "True" : "False") + ")";
      });

  // --- Model
  py::class_<PyModel>(m, "Model",
                      "An immutable Titans model (config + weights), shared by its sessions and "
                      "safe to use from any number of threads.")
      .def_static(
          "load",
          [](const std::filesystem::path& path, const std::optional<std::string>& weights) {
            const std::optional<titans::WeightType> type =
                weights ? std::optional(WeightTypeNamed(*weights, "Model.load")) : std::nullopt;
            py::gil_scoped_release release;
            std::shared_ptr<const titans::Model> model = titans::Model::Load(PathText(path));
            if (type) model = WithWeights(std::move(model), *type);
            return PyModel{std::move(model)};
          },
          "path"_a, "weights"_a = py::none(),
          "Loads a model file (safetensors with the config in its metadata, "
          "docs/FILE_FORMAT.md); every name, shape and value is checked. weights: how the "
          "product matrices are stored, \"f32\" or \"bf16\" (rounded); None: as the file "
          "stores them.")
      .def_static(
          "random",
          [](const py::object& config, uint64_t seed, const std::string& weights) {
            const titans::ModelConfig c = titans::ModelConfig::FromJson(ConfigText(config));
            const titans::WeightType type = WeightTypeNamed(weights, "Model.random");
            py::gil_scoped_release release;
            return PyModel{std::make_shared<const titans::Model>(
                c, titans::ModelWeights::Random(c, seed), type)};
          },
          "config"_a, "seed"_a = 1, "weights"_a = "f32",
          "A model with seeded random weights (as `titans make-model`) for a config dict or JSON "
          "text in the engine's form (Model.config of another model; docs/FILE_FORMAT.md); "
          "weights \"bf16\" rounds its product matrices to bf16.")
      .def_static(
          "from_tensors",
          [](const py::object& config, const py::dict& tensors, const std::string& weights) {
            const titans::ModelConfig c = titans::ModelConfig::FromJson(ConfigText(config));
            const titans::WeightType type = WeightTypeNamed(weights, "Model.from_tensors");
            titans::ModelWeights model_weights = titans::ModelWeights::Zeros(c);
            FillTensors(model_weights.Tensors(c), tensors, "Model.from_tensors");
            py::gil_scoped_release release;
            return PyModel{
                std::make_shared<const titans::Model>(c, std::move(model_weights), type)};
          },
          "config"_a, "tensors"_a, "weights"_a = "f32",
          "A model from a config and a dict of its tensors by file name (float arrays of "
          "exactly the shapes docs/FILE_FORMAT.md lists): what a model file holds, without the "
          "file; weights \"bf16\" rounds its product matrices to bf16.")
      .def(
          "with_weights",
          [](const PyModel& self, const std::string& weights) {
            const titans::WeightType type = WeightTypeNamed(weights, "Model.with_weights");
            py::gil_scoped_release release;
            return PyModel{WithWeights(self.model, type)};
          },
          "weights"_a,
          "This model with its product matrices stored as \"f32\" or \"bf16\": a converted "
          "copy (to bf16 the values are rounded; to f32 a bf16 model's rounded values are "
          "kept), or this same model when it already stores them so.")
      .def(
          "save",
          [](const PyModel& self, const std::filesystem::path& path) {
            py::gil_scoped_release release;
            self.model->Save(PathText(path));
          },
          "path"_a, "Writes the model file (atomically); a bf16 model's product matrices as BF16.")
      .def_property_readonly(
          "config", [](const PyModel& self) { return ConfigDict(self.model->config().ToJson()); },
          "The ModelConfig as a dict (a new one on every access).")
      .def_property_readonly(
          "config_json", [](const PyModel& self) { return self.model->config().ToJson(); },
          "The ModelConfig as the engine's canonical JSON text.")
      .def_property_readonly(
          "vocab_size", [](const PyModel& self) { return self.model->config().vocab_size; },
          "V: the vocabulary size (0: the model takes input embeddings).")
      .def_property_readonly(
          "d_model", [](const PyModel& self) { return self.model->config().d_model; },
          "d: the model width (embeddings and hidden states are [n, d]).")
      .def_property_readonly(
          "weight_type",
          [](const PyModel& self) {
            return std::string(titans::ToString(self.model->weight_type()));
          },
          "How the product matrices (attention and memory projections, feed-forward, LM head) "
          "are stored: \"f32\" or \"bf16\" (everything else is float32).")
      .def_property_readonly(
          "num_layers",
          [](const PyModel& self) { return static_cast<int>(self.model->config().layers.size()); },
          "The number of blocks.")
      .def(
          "tensors",
          [](const PyModel& self) {
            return TensorDict(self.model->weights().Tensors(self.model->config()));
          },
          "Every weight by its file name, as float32 arrays (copies): what from_tensors takes.")
      .def(
          "memory",
          [](const PyModel& self, int layer) -> std::optional<PyMemory> {
            const auto& memory = self.model->memory(layer);
            if (!memory) return std::nullopt;
            return PyMemory{memory};
          },
          "layer"_a,
          "The NeuralMemory of block `layer` (None for a block without memory), shared with the "
          "model.")
      .def("__repr__", [](const PyModel& self) {
        const titans::ModelConfig& c = self.model->config();
        return "<titans.Model " + std::string(titans::ToString(c.architecture)) +
               ", vocab_size=" + std::to_string(c.vocab_size) +
               ", d_model=" + std::to_string(c.d_model) +
               ", layers=" + std::to_string(c.layers.size()) +
               ", weights=" + titans::ToString(self.model->weight_type()) + ">";
      });

  // --- Session
  py::class_<Generator>(m, "Generator",
                        "The iterator Session.generate returns: yields each new token as it is "
                        "sampled.")
      .def("__iter__", [](py::object self) { return self; })
      .def("__next__", &Generator::Next);

  py::class_<PySession>(m, "Session",
                        "One stream through a Model: feed tokens in pieces of any size, "
                        "generate, save/load/clone/reset. One Python thread computes in a "
                        "session at a time (others wait); different sessions run in parallel.")
      .def(py::init([](const PyModel& model, std::optional<int> threads,
                       std::optional<titans::SessionOptions> options) {
             const titans::SessionOptions o = Options(options, threads);
             py::gil_scoped_release release;
             return std::make_unique<PySession>(model.model, titans::Session(model.model, o));
           }),
           "model"_a, "threads"_a = py::none(), "options"_a = py::none(),
           "A new session at position 0. threads overrides options.threads (0 = all).")
      .def_static(
          "from_state_bytes",
          [](const PyModel& model, const py::buffer& data, std::optional<int> threads,
             std::optional<titans::SessionOptions> options) {
            const titans::SessionOptions o = Options(options, threads);
            const py::buffer_info info = data.request();
            const std::span<const std::byte> bytes(static_cast<const std::byte*>(info.ptr),
                                                   static_cast<size_t>(info.size * info.itemsize));
            py::gil_scoped_release release;
            titans::Session s(model.model, o);
            s.LoadFromBytes(bytes);
            return std::make_unique<PySession>(model.model, std::move(s));
          },
          "model"_a, "data"_a, "threads"_a = py::none(), "options"_a = py::none(),
          "A new session of `model` with the state of `data` (what state_bytes returned).")
      .def(
          "forward",
          [](PySession& self, py::handle tokens) {
            const Tokens t(tokens);
            py::array_t<float> logits =
                Output(static_cast<int64_t>(t.span().size()), self.model->config().vocab_size);
            Compute(self, [&] { self.session.Forward(t.span(), Span(logits)); });
            return logits;
          },
          "tokens"_a,
          "Feeds tokens [n] (ints: a list, a numpy array or a torch tensor) and returns their "
          "logits, a float32 array [n, V]. A token outside [0, V) raises InvalidArgumentError "
          "before anything changes.")
      .def(
          "forward_embeddings",
          [](PySession& self, py::handle embeddings) {
            const int64_t d = self.model->config().d_model;
            const Rows x(embeddings, d, "embeddings");
            py::array_t<float> hidden = Output(x.rows(), d);
            Compute(self, [&] { self.session.ForwardEmbeddings(x.span(d), Span(hidden)); });
            return hidden;
          },
          "embeddings"_a,
          "Feeds input embeddings, float32 [n, d], and returns the hidden states after the final "
          "norm, float32 [n, d].")
      .def(
          "generate",
          [](py::object self_obj, py::handle prompt, int max_new_tokens, float temperature,
             int top_k, float top_p, uint64_t seed) {
            PySession& self = self_obj.cast<PySession&>();
            const int vocab = self.model->config().vocab_size;
            if (vocab == 0) {
              Throw(ErrorCode::kInvalidArgument,
                    "this model takes input embeddings (vocab_size 0) and cannot generate tokens");
            }
            const Tokens t(prompt);
            std::vector<int32_t> tokens(t.span().begin(), t.span().end());
            if (max_new_tokens < 0) {
              Throw(ErrorCode::kInvalidArgument, "max_new_tokens must be >= 0");
            }
            if (tokens.empty() && max_new_tokens > 0) {
              Throw(ErrorCode::kInvalidArgument, "generate needs a prompt of at least one token");
            }
            for (size_t i = 0; i < tokens.size(); ++i) {
              if (tokens[i] < 0 || tokens[i] >= vocab) {
                Throw(ErrorCode::kInvalidArgument,
                      "token " + std::to_string(tokens[i]) + " at index " + std::to_string(i) +
                          " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
              }
            }
            const titans::SamplerOptions sampler{temperature, top_k, top_p, seed};
            // The engine's own check of the options, now rather than at the first token.
            std::mt19937_64 scratch(0);
            const float one_logit = 0.0f;
            titans::SampleToken(std::span<const float>(&one_logit, 1), sampler, scratch);
            return Generator(self_obj, self, std::move(tokens), max_new_tokens, sampler);
          },
          "prompt"_a, "max_new_tokens"_a = 32, "temperature"_a = 0.0f, "top_k"_a = 0,
          "top_p"_a = 1.0f, "seed"_a = 0,
          "Feeds the prompt, then samples max_new_tokens tokens one at a time and yields each as "
          "it is made (a generator; nothing runs until the first token is asked for). The same "
          "tokens as `titans generate --prompt-tokens ... -n N --temperature T --top-k K --top-p "
          "P --seed S`. Each token is fed back when the next one is asked for, so the last one "
          "is not fed (as Session::Generate); stopping early leaves the session after the last "
          "token yielded but one.")
      .def(
          "save",
          [](PySession& self, const std::filesystem::path& path) {
            Compute(self, [&] { self.session.Save(PathText(path)); });
          },
          "path"_a, "Writes the session's state to a file (atomically).")
      .def(
          "load",
          [](PySession& self, const std::filesystem::path& path) {
            Compute(self, [&] { self.session.Load(PathText(path)); });
          },
          "path"_a,
          "Replaces the state with a file's (it must belong to this model's config); unchanged "
          "on error.")
      .def(
          "state_bytes",
          [](PySession& self) {
            const std::vector<std::byte> bytes =
                Compute(self, [&] { return self.session.SaveToBytes(); });
            return py::bytes(reinterpret_cast<const char*>(bytes.data()), bytes.size());
          },
          "The state as bytes: exactly what save() writes to a file.")
      .def(
          "load_state_bytes",
          [](PySession& self, const py::buffer& data) {
            const py::buffer_info info = data.request();
            const std::span<const std::byte> bytes(static_cast<const std::byte*>(info.ptr),
                                                   static_cast<size_t>(info.size * info.itemsize));
            Compute(self, [&] { self.session.LoadFromBytes(bytes); });
          },
          "data"_a, "Replaces the state with state_bytes() output (any bytes-like object).")
      .def(
          "clone",
          [](PySession& self) {
            titans::Session copy = Compute(self, [&] { return self.session.Clone(); });
            return std::make_unique<PySession>(self.model, std::move(copy));
          },
          "An independent copy of this stream.")
      .def(
          "reset", [](PySession& self) { Compute(self, [&] { self.session.Reset(); }); },
          "Back to position 0.")
      .def(
          "reset_memory",
          [](PySession& self) { Compute(self, [&] { self.session.ResetMemory(); }); },
          "Forgets what the memories wrote, keeping the position and the attention caches "
          "(include/titans/session.hpp, Session::ResetMemory).")
      .def_property_readonly(
          "position",
          [](PySession& self) { return Compute(self, [&] { return self.session.position(); }); },
          "Tokens fed so far.")
      .def_property_readonly(
          "model", [](const PySession& self) { return PyModel{self.model}; }, "The Model it runs.")
      .def(
          "health",
          [](PySession& self) {
            const std::vector<titans::LayerHealth> health =
                Compute(self, [&] { return self.session.Health(); });
            py::list out;
            for (const titans::LayerHealth& h : health) {
              py::dict d = HealthDict(h.memory);
              d["layer"] = h.layer;
              out.append(d);
            }
            return out;
          },
          "Each memory layer's health (norms of the fast weights, finite, all zero), in layer "
          "order.")
      .def("__repr__", [](PySession& self) {
        return "<titans.Session position=" +
               std::to_string(Compute(self, [&] { return self.session.position(); })) + ">";
      });

  // --- NeuralMemory and MemorySession
  py::class_<PyMemory>(m, "NeuralMemory",
                       "An immutable neural long-term memory layer (config + learned weights).")
      .def_static(
          "load",
          [](const std::filesystem::path& path) {
            py::gil_scoped_release release;
            return PyMemory{titans::NeuralMemory::Load(PathText(path))};
          },
          "path"_a, "Loads a memory file (docs/STATE_FORMAT.md).")
      .def_static(
          "random",
          [](const py::object& config, uint64_t seed) {
            const titans::MemoryConfig c = titans::MemoryConfig::FromJson(ConfigText(config));
            py::gil_scoped_release release;
            return PyMemory{std::make_shared<const titans::NeuralMemory>(
                c, titans::MemoryWeights::Random(c, seed))};
          },
          "config"_a, "seed"_a = 1,
          "A memory with seeded random weights for a MemoryConfig dict or JSON text.")
      .def_static(
          "from_tensors",
          [](const py::object& config, const py::dict& tensors) {
            const titans::MemoryConfig c = titans::MemoryConfig::FromJson(ConfigText(config));
            titans::MemoryWeights weights = titans::MemoryWeights::Zeros(c);
            FillTensors(weights.Tensors(c), tensors, "NeuralMemory.from_tensors");
            py::gil_scoped_release release;
            return PyMemory{std::make_shared<const titans::NeuralMemory>(c, std::move(weights))};
          },
          "config"_a, "tensors"_a,
          "A memory from a config and a dict of its tensors by name (what a memory file holds).")
      .def(
          "save",
          [](const PyMemory& self, const std::filesystem::path& path) {
            py::gil_scoped_release release;
            self.memory->Save(PathText(path));
          },
          "path"_a, "Writes the memory file (atomically).")
      .def_property_readonly(
          "config", [](const PyMemory& self) { return ConfigDict(self.memory->config().ToJson()); },
          "The MemoryConfig as a dict.")
      .def(
          "tensors",
          [](const PyMemory& self) {
            return TensorDict(self.memory->weights().Tensors(self.memory->config()));
          },
          "Every weight by name, as float32 arrays (copies): what from_tensors takes.")
      .def_property_readonly(
          "input_width", [](const PyMemory& self) { return self.memory->input_width(); },
          "d: the width of the inputs [n, d].")
      .def_property_readonly(
          "output_width", [](const PyMemory& self) { return self.memory->output_width(); },
          "The width of the outputs (d with an output projection, else heads * head_dim).")
      .def("__repr__", [](const PyMemory& self) {
        return "<titans.NeuralMemory input_width=" + std::to_string(self.memory->input_width()) +
               ", output_width=" + std::to_string(self.memory->output_width()) + ">";
      });

  py::class_<PyMemorySession>(m, "MemorySession",
                              "One stream through a NeuralMemory: forward any number of tokens "
                              "at a time, save/load/clone/reset.")
      .def(py::init([](const PyMemory& memory, std::optional<int> threads,
                       std::optional<titans::SessionOptions> options) {
             const titans::SessionOptions o = Options(options, threads);
             py::gil_scoped_release release;
             return std::make_unique<PyMemorySession>(memory.memory,
                                                      titans::MemorySession(memory.memory, o));
           }),
           "memory"_a, "threads"_a = py::none(), "options"_a = py::none())
      .def(
          "forward",
          [](PyMemorySession& self, py::handle x, py::handle retrieve) {
            const int64_t d = self.memory->input_width();
            const Rows store(x, d, "x");
            py::array_t<float> out = Output(store.rows(), self.memory->output_width());
            if (retrieve.is_none()) {
              Compute(self, [&] { self.session.Forward(store.span(d), Span(out)); });
              return out;
            }
            const Rows r(retrieve, d, "retrieve");
            if (r.rows() != store.rows()) {
              Throw(ErrorCode::kInvalidArgument, "x and retrieve must have the same rows, got " +
                                                     std::to_string(store.rows()) + " and " +
                                                     std::to_string(r.rows()));
            }
            Compute(self, [&] { self.session.Forward(store.span(d), r.span(d), Span(out)); });
            return out;
          },
          "x"_a, "retrieve"_a = py::none(),
          "Writes tokens x, float32 [n, d], into the memory and reads it back (with `retrieve` "
          "[n, d] as the queries' input when given, else x); returns float32 [n, output_width].")
      .def(
          "read",
          [](PyMemorySession& self, py::handle retrieve) {
            const int64_t d = self.memory->input_width();
            const Rows r(retrieve, d, "retrieve");
            py::array_t<float> out = Output(r.rows(), self.memory->output_width());
            Compute(self, [&] { self.session.Read(r.span(d), Span(out)); });
            return out;
          },
          "retrieve"_a,
          "Reads the memory with queries from `retrieve`, float32 [n, d], writing nothing; "
          "returns float32 [n, output_width].")
      .def(
          "save",
          [](PyMemorySession& self, const std::filesystem::path& path) {
            Compute(self, [&] { self.session.Save(PathText(path)); });
          },
          "path"_a, "Writes the state file (atomically).")
      .def(
          "load",
          [](PyMemorySession& self, const std::filesystem::path& path) {
            Compute(self, [&] { self.session.Load(PathText(path)); });
          },
          "path"_a, "Replaces the state with a state file's; unchanged on error.")
      .def(
          "clone",
          [](PyMemorySession& self) {
            titans::MemorySession copy = Compute(self, [&] { return self.session.Clone(); });
            return std::make_unique<PyMemorySession>(self.memory, std::move(copy));
          },
          "An independent copy of this stream.")
      .def(
          "reset", [](PyMemorySession& self) { Compute(self, [&] { self.session.Reset(); }); },
          "Back to the initial state (position 0).")
      .def_property_readonly(
          "position",
          [](PyMemorySession& self) {
            return Compute(self, [&] { return self.session.position(); });
          },
          "Tokens consumed so far.")
      .def_property_readonly(
          "memory", [](const PyMemorySession& self) { return PyMemory{self.memory}; },
          "The NeuralMemory it runs.")
      .def(
          "health",
          [](PyMemorySession& self) {
            return HealthDict(Compute(self, [&] { return self.session.Health(); }));
          },
          "The state's health: norms of the fast weights, finite, all zero.");

  // --- private: the engine's own loops, timed in C++ for tools/bench_python.py
  m.def(
      "_decode_loop_seconds",
      [](PySession& self, py::handle tokens) {
        const Tokens t(tokens);
        return Compute(self, [&] {
          std::vector<float> logits(static_cast<size_t>(self.model->config().vocab_size));
          const auto start = std::chrono::steady_clock::now();
          for (const int32_t& token : t.span()) {
            self.session.Forward(std::span<const int32_t>(&token, 1), logits);
          }
          return Seconds(start);
        });
      },
      "session"_a, "tokens"_a,
      "Seconds for the C++ loop `for token: Forward([token])` (one-token decode), on `session`.");
  m.def(
      "_forward_seconds",
      [](PySession& self, py::handle tokens) {
        const Tokens t(tokens);
        return Compute(self, [&] {
          const auto start = std::chrono::steady_clock::now();
          std::vector<float> logits(t.span().size() *
                                    static_cast<size_t>(self.model->config().vocab_size));
          self.session.Forward(t.span(), logits);
          return Seconds(start);
        });
      },
      "session"_a, "tokens"_a,
      "Seconds for one C++ Forward of all `tokens` (with the allocation of its logits, as "
      "Session.forward allocates its array).");
}
