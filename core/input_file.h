// Helpers shared by the parsers of user files (YAML configs, config.json, tokenizer.json, safetensors headers,
// JSONL): every message starts with where the bad input is, "FILE:LINE:COL:" (1-based) or "FILE:", names the field
// and the value, and says what to do. The node and mark helpers are templates over yaml-cpp's types so that core
// stays free of yaml-cpp; they are instantiated only by the modules that parse YAML or JSON.
#pragma once

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "core/error.h"

namespace frugal::input {

// Throws ConfigError unless path is an existing regular file (not a directory). what: "YAML config",
// "tokenizer.json", ...; fix: what the user should give instead.
inline void require_file(const std::string& path, const std::string& what, const std::string& fix) {
    std::error_code ec;
    const auto st = std::filesystem::status(path, ec);
    if (ec || !std::filesystem::exists(st)) FRUGAL_CONFIG_ERROR(what, " ", path, " does not exist: ", fix);
    if (std::filesystem::is_directory(st)) FRUGAL_CONFIG_ERROR(what, " ", path, " is a directory, not a file: ", fix);
    if (!std::filesystem::is_regular_file(st)) FRUGAL_CONFIG_ERROR(what, " ", path, " is not a regular file: ", fix);
}

// The whole file as bytes (after require_file).
inline std::string read_file(const std::string& path, const std::string& what, const std::string& fix) {
    require_file(path, what, fix);
    std::ifstream in(path, std::ios::binary);
    if (!in) FRUGAL_CONFIG_ERROR("cannot read ", what, " ", path, ": ", fix);
    std::ostringstream buf;
    buf << in.rdbuf();
    return buf.str();
}

// "PATH:LINE:COL" of a yaml-cpp Mark (0-based line and column, -1 when unknown), or "PATH".
template <typename Mark>
std::string at(const std::string& path, const Mark& m) {
    if (m.line < 0) return path;
    return path + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1);
}

// A scalar's text, quoted or not; throws unless the node is a scalar.
template <typename Node>
std::string scalar_text(const Node& n, const std::string& path, const std::string& field, const char* expected) {
    if (!n.IsScalar())
        FRUGAL_CONFIG_ERROR(at(path, n.Mark()), ": ", field, ": expected ", expected, ", got ",
                            n.IsNull()       ? "null"
                            : n.IsSequence() ? "a list"
                                             : "an object");
    return n.Scalar();
}

// A JSON number written as a plain (unquoted) scalar: "12" in quotes is a string and refused.
template <typename Node>
std::string number_text(const Node& n, const std::string& path, const std::string& field, const char* expected) {
    std::string s = scalar_text(n, path, field, expected);
    if (n.Tag() == "!")
        FRUGAL_CONFIG_ERROR(at(path, n.Mark()), ": ", field, ": expected ", expected, ", got the string \"", s,
                            "\": write the number without quotes");
    return s;
}

// An integer in [min, max]: digits with an optional sign, nothing else (1.5, 1e3 and 0x10 are refused).
template <typename Node>
int64_t as_int(const Node& n, const std::string& path, const std::string& field, int64_t min, int64_t max) {
    const std::string s = number_text(n, path, field, "an integer");
    int64_t v = 0;
    const char* b = s.data() + (s.size() > 1 && s[0] == '+' ? 1 : 0);
    const auto r = std::from_chars(b, s.data() + s.size(), v);
    if (s.empty() || r.ec != std::errc() || r.ptr != s.data() + s.size())
        FRUGAL_CONFIG_ERROR(at(path, n.Mark()), ": ", field, ": expected an integer in [", min, ", ", max, "], got '",
                            s, "'");
    if (v < min || v > max)
        FRUGAL_CONFIG_ERROR(at(path, n.Mark()), ": ", field, " = ", v, " is out of range: expected an integer in [",
                            min, ", ", max, "]");
    return v;
}

// A finite number in [min, max].
template <typename Node>
double as_number(const Node& n, const std::string& path, const std::string& field, double min, double max) {
    const std::string s = number_text(n, path, field, "a number");
    char* end = nullptr;
    errno = 0;
    const double v = std::strtod(s.c_str(), &end);
    if (s.empty() || *end != '\0' || errno != 0 || !std::isfinite(v))
        FRUGAL_CONFIG_ERROR(at(path, n.Mark()), ": ", field, ": expected a finite number, got '", s, "'");
    if (v < min || v > max)
        FRUGAL_CONFIG_ERROR(at(path, n.Mark()), ": ", field, " = ", s, " is out of range: expected a number in [", min,
                            ", ", max, "]");
    return v;
}

template <typename Node>
bool as_bool(const Node& n, const std::string& path, const std::string& field) {
    const std::string s = number_text(n, path, field, "true or false");
    if (s == "true") return true;
    if (s == "false") return false;
    FRUGAL_CONFIG_ERROR(at(path, n.Mark()), ": ", field, ": expected true or false, got '", s, "'");
}

template <typename Node>
std::string as_string(const Node& n, const std::string& path, const std::string& field) {
    return scalar_text(n, path, field, "a string");
}

}  // namespace frugal::input
