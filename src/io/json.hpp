// Untrusted JSON and untrusted names (internal): the checks every reader of the engine's files
// shares.
//
// - Depth: nlohmann's copies, comparisons and dump() recurse, so a document nested 100K levels
//   deep overflows the stack. CheckJsonDepth refuses anything nested deeper than kMaxJsonDepth
//   before it is parsed (a scan of the text, no recursion).
// - Config fields: IntField / FloatField / BoolField / ObjectField read one field of a config
//   object and refuse, naming the field, anything that is not exactly a value of its type in
//   the field's documented range (docs/FILE_FORMAT.md "Value ranges"): no silent rounding,
//   truncation, wrap-around or float overflow.
// - Messages: Printable / Quoted make a name or value read from a file safe to print (no
//   terminal escapes) and bounded in length.
// Every error is a titans::Error(kFormat).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace titans::io {

// Deeper than this is refused before parsing: the engine's own files nest 3 levels.
inline constexpr int kMaxJsonDepth = 64;

// Throws Error(kFormat, what + ": ...") if `text` opens more than kMaxJsonDepth arrays and
// objects inside one another (strings and their escapes are skipped).
void CheckJsonDepth(std::string_view text, const std::string& what);

// `s` with every byte outside printable ASCII (control characters such as ESC and form feed,
// DEL, and every byte >= 0x80) written as \xNN, cut to `limit` bytes of input ("..." after).
std::string Printable(std::string_view s, size_t limit = 200);
// Printable(s) in double quotes.
std::string Quoted(std::string_view s, size_t limit = 200);
// A JSON value for a message: compact, ASCII only, cut to `limit` characters.
std::string Shown(const nlohmann::json& value, size_t limit = 200);
std::string Shown(const nlohmann::ordered_json& value, size_t limit = 200);

// One field `key` of the JSON object `object` of a config. Messages read
// "<what>: <prefix><key> must be ..., got <value>" (what: "model config JSON", prefix:
// "memory.").
struct ConfigObject {
  const nlohmann::json& object;
  std::string what;    // "model config JSON", "memory config JSON"
  std::string prefix;  // "", "attention.", "memory."
};

// The field's JSON value; it must be there (and `object` an object).
const nlohmann::json& Field(const ConfigObject& c, const char* key);
// A number whose value is an integer in [lo, hi] (4, 4.0 and 4e0 are 4; 4.5, 1e12 are not).
int IntField(const ConfigObject& c, const char* key, int lo, int hi);
// A finite number in [lo, hi] (or (lo, hi] when lo_open) that a float represents without
// overflow or underflow to zero; returned rounded to the nearest float.
float FloatField(const ConfigObject& c, const char* key, double lo, double hi,
                 bool lo_open = false);
bool BoolField(const ConfigObject& c, const char* key);
// A JSON object (the nested config of "attention", "memory", "tp_mac").
ConfigObject ObjectField(const ConfigObject& c, const char* key);

// Parses config JSON text after CheckJsonDepth; a syntax error is Error(kFormat, what + ": ...").
nlohmann::json ParseConfigText(const std::string& text, const std::string& what);

}  // namespace titans::io
