#include "io/json.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "titans/error.hpp"

namespace titans::io {
namespace {

[[noreturn]] void Refuse(const ConfigObject& c, const char* key, const std::string& rule,
                         const nlohmann::json& value) {
  throw Error(ErrorCode::kFormat,
              c.what + ": " + c.prefix + key + " must be " + rule + ", got " + Shown(value));
}

std::string Number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

}  // namespace

void CheckJsonDepth(std::string_view text, const std::string& what) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char ch = text[i];
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (ch == '\\') {
        escaped = true;
      } else if (ch == '"') {
        in_string = false;
      }
      continue;
    }
    if (ch == '"') {
      in_string = true;
    } else if (ch == '[' || ch == '{') {
      if (++depth > kMaxJsonDepth) {
        throw Error(ErrorCode::kFormat, what + ": JSON nested deeper than " +
                                            std::to_string(kMaxJsonDepth) + " levels (at byte " +
                                            std::to_string(i) + ")");
      }
    } else if (ch == ']' || ch == '}') {
      --depth;  // unbalanced text is the parser's to report
    }
  }
}

std::string Printable(std::string_view s, size_t limit) {
  std::string out;
  const size_t n = std::min(s.size(), limit);
  out.reserve(n + 8);
  for (size_t i = 0; i < n; ++i) {
    const auto byte = static_cast<unsigned char>(s[i]);
    if (byte >= 0x20 && byte < 0x7f) {
      out += static_cast<char>(byte);
    } else {
      char buf[5];
      std::snprintf(buf, sizeof buf, "\\x%02x", byte);
      out += buf;
    }
  }
  if (s.size() > limit) out += "...";
  return out;
}

std::string Quoted(std::string_view s, size_t limit) { return "\"" + Printable(s, limit) + "\""; }

namespace {
template <class Json>
std::string ShownJson(const Json& value, size_t limit) {
  try {
    // ensure_ascii: every non-ASCII or control character as \uXXXX; Printable is the backstop.
    return Printable(value.dump(-1, ' ', true, Json::error_handler_t::replace), limit);
  } catch (const nlohmann::json::exception&) {
    return "(a value that cannot be shown)";
  }
}
}  // namespace

std::string Shown(const nlohmann::json& value, size_t limit) { return ShownJson(value, limit); }
std::string Shown(const nlohmann::ordered_json& value, size_t limit) {
  return ShownJson(value, limit);
}

const nlohmann::json& Field(const ConfigObject& c, const char* key) {
  if (!c.object.is_object()) {
    const std::string name =
        c.prefix.empty() ? std::string("the config") : c.prefix.substr(0, c.prefix.size() - 1);
    throw Error(ErrorCode::kFormat,
                c.what + ": " + name + " is a JSON " + c.object.type_name() + ", not an object");
  }
  const auto it = c.object.find(key);
  if (it == c.object.end()) {
    throw Error(ErrorCode::kFormat, c.what + ": missing \"" + c.prefix + key + "\"");
  }
  return *it;
}

int IntField(const ConfigObject& c, const char* key, int lo, int hi) {
  const nlohmann::json& v = Field(c, key);
  const std::string rule = "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (hi < 0 || u > static_cast<uint64_t>(hi) || static_cast<int64_t>(u) < lo) {
      Refuse(c, key, rule, v);
    }
    return static_cast<int>(u);
  }
  if (v.is_number_integer()) {
    const int64_t i = v.get<int64_t>();
    if (i < lo || i > hi) Refuse(c, key, rule, v);
    return static_cast<int>(i);
  }
  if (v.is_number_float()) {
    const double d = v.get<double>();
    // Compared as doubles before any conversion: no float-to-int overflow.
    if (!std::isfinite(d) || std::floor(d) != d || d < lo || d > hi) Refuse(c, key, rule, v);
    return static_cast<int>(d);
  }
  Refuse(c, key, rule, v);
}

float FloatField(const ConfigObject& c, const char* key, double lo, double hi, bool lo_open) {
  const nlohmann::json& v = Field(c, key);
  const std::string rule =
      "a number in " + std::string(lo_open ? "(" : "[") + Number(lo) + ", " + Number(hi) + "]";
  if (!v.is_number()) Refuse(c, key, rule, v);
  const double d = v.get<double>();
  if (!std::isfinite(d) || d < lo || d > hi || (lo_open && d == lo)) Refuse(c, key, rule, v);
  if (std::fabs(d) > std::numeric_limits<float>::max()) {  // the cast would be undefined
    Refuse(c, key, rule + " that a float can hold", v);
  }
  const float f = static_cast<float>(d);
  if (!std::isfinite(f) || (d != 0 && f == 0)) {
    Refuse(c, key, rule + " that a float can hold", v);
  }
  return f;
}

bool BoolField(const ConfigObject& c, const char* key) {
  const nlohmann::json& v = Field(c, key);
  if (!v.is_boolean()) Refuse(c, key, "true or false", v);
  return v.get<bool>();
}

ConfigObject ObjectField(const ConfigObject& c, const char* key) {
  const nlohmann::json& v = Field(c, key);
  if (!v.is_object()) Refuse(c, key, "a JSON object", v);
  return ConfigObject{v, c.what, c.prefix + key + "."};
}

nlohmann::json ParseConfigText(const std::string& text, const std::string& what) {
  CheckJsonDepth(text, what);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorCode::kFormat, what + ": " + Printable(e.what(), 500));
  }
}

}  // namespace titans::io
