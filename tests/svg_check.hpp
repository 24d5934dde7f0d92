// A check that a file the program wrote is well-formed SVG (tests of evals/plot.cpp and of the
// command-line program): one <svg> root after an optional XML declaration, every element closed
// in order, attribute quotes paired, and `&` only in the five predefined entities. Enough to
// catch broken output without an XML parser.
#pragma once

#include <cctype>
#include <string>
#include <vector>

namespace titans::testing {

// "" if `text` is well-formed, otherwise the first problem found.
inline std::string SvgProblem(const std::string& text) {
  size_t i = 0;
  if (text.rfind("<?xml", 0) == 0) {
    const size_t end = text.find("?>");
    if (end == std::string::npos) return "unterminated XML declaration";
    i = end + 2;
  }
  std::vector<std::string> open;
  bool root_seen = false;
  while (i < text.size()) {
    const char c = text[i];
    if (c == '<') {
      const size_t end = text.find('>', i);
      if (end == std::string::npos) return "unterminated tag at byte " + std::to_string(i);
      std::string tag = text.substr(i + 1, end - i - 1);
      i = end + 1;
      if (tag.empty()) return "empty tag";
      if (tag[0] == '/') {
        if (open.empty() || open.back() != tag.substr(1)) return "unexpected <" + tag + ">";
        open.pop_back();
        continue;
      }
      if (open.empty() && root_seen) return "a second root element <" + tag + ">";
      size_t quotes = 0;
      for (char t : tag) quotes += t == '"' ? 1 : 0;
      if (quotes % 2 != 0) return "unpaired quote in <" + tag + ">";
      const bool self_closing = tag.back() == '/';
      const std::string name = tag.substr(0, tag.find_first_of(" /\n"));
      if (!root_seen && name != "svg") return "the root is <" + name + ">, not <svg>";
      root_seen = true;
      if (!self_closing) open.push_back(name);
    } else if (c == '&') {
      const size_t end = text.find(';', i);
      const std::string entity = end == std::string::npos ? "" : text.substr(i, end - i + 1);
      if (entity != "&amp;" && entity != "&lt;" && entity != "&gt;" && entity != "&quot;" &&
          entity != "&apos;") {
        return "bare & at byte " + std::to_string(i);
      }
      i = end + 1;
    } else {
      if (open.empty() && !std::isspace(static_cast<unsigned char>(c))) {
        return "text outside the root element at byte " + std::to_string(i);
      }
      ++i;
    }
  }
  if (!root_seen) return "no <svg> element";
  if (!open.empty()) return "<" + open.back() + "> is not closed";
  return "";
}

}  // namespace titans::testing
