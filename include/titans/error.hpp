// titans/error.hpp: the one exception type the library throws.
//
// Every error caused by the caller (a bad config, a malformed or mismatched file, a NaN in the
// input, a token out of range) is reported as a titans::Error. The library never aborts or exits
// its host process on user error, and a failed call leaves the object it was called on as it was.
#pragma once

#include <stdexcept>
#include <string>

namespace titans {

enum class ErrorCode {
  kInvalidArgument,  // a bad value passed to a function (shape, size, NaN/Inf input)
  kConfig,           // a configuration that is inconsistent or not supported
  kIo,               // a file could not be opened, read, written or renamed
  kFormat,           // a file is malformed, truncated or of an unknown version
  kMismatch,         // a file is well formed but belongs to another configuration
  kNumerical,        // a computation overflowed to NaN/Inf (a diverged memory, a state file
                     // with huge values): the session that ran it must be Reset or Loaded
};

const char* ToString(ErrorCode code);

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message)
      : std::runtime_error(std::string(ToString(code)) + ": " + message), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

}  // namespace titans
