#include "titans/error.hpp"

namespace titans {

const char* ToString(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument:
      return "invalid argument";
    case ErrorCode::kConfig:
      return "unsupported configuration";
    case ErrorCode::kIo:
      return "i/o error";
    case ErrorCode::kFormat:
      return "malformed file";
    case ErrorCode::kMismatch:
      return "mismatch";
    case ErrorCode::kNumerical:
      return "numerical failure";
  }
  return "error";
}

}  // namespace titans
