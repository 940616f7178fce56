#include "core/json.h"

#include <charconv>
#include <cmath>
#include <cstdio>

#include "core/error.h"

namespace frugal {

std::string json_quote(std::string_view s) {
    std::string out = "\"";
    for (const char c : s) {
        switch (c) {
            case '"':
                out += "\\\"";
                break;
            case '\\':
                out += "\\\\";
                break;
            case '\n':
                out += "\\n";
                break;
            case '\r':
                out += "\\r";
                break;
            case '\t':
                out += "\\t";
                break;
            default:
                if (static_cast<unsigned char>(c) < 0x20) {
                    char buf[8];
                    std::snprintf(buf, sizeof buf, "\\u%04x", unsigned(static_cast<unsigned char>(c)));
                    out += buf;
                } else {
                    out += c;
                }
        }
    }
    return out + "\"";
}

std::string json_number(double v) {
    if (!std::isfinite(v)) return "null";
    char buf[32];
    const auto r = std::to_chars(buf, buf + sizeof buf, v);
    return std::string(buf, r.ptr);
}

void JsonWriter::separate() {
    FRUGAL_CHECK(!done_, "JSON writer: a second top-level value after a complete document");
    if (stack_.empty()) return;
    Level& l = stack_.back();
    if (l.is_object) {
        FRUGAL_CHECK(l.after_key, "JSON writer: a value inside an object needs key() first");
        l.after_key = false;
        return;
    }
    if (!l.empty) out_ += ", ";
    l.empty = false;
}

JsonWriter& JsonWriter::raw(const std::string& token) {
    separate();
    out_ += token;
    if (stack_.empty()) done_ = true;
    return *this;
}

JsonWriter& JsonWriter::key(std::string_view name) {
    FRUGAL_CHECK(!stack_.empty() && stack_.back().is_object && !stack_.back().after_key, "JSON writer: key('",
                 std::string(name), "') outside an object or right after another key");
    Level& l = stack_.back();
    if (!l.empty) out_ += ", ";
    l.empty = false;
    l.after_key = true;
    out_ += json_quote(name) + ": ";
    return *this;
}

JsonWriter& JsonWriter::begin_object() {
    separate();
    out_ += "{";
    stack_.push_back({true});
    return *this;
}

JsonWriter& JsonWriter::begin_array() {
    separate();
    out_ += "[";
    stack_.push_back({false});
    return *this;
}

JsonWriter& JsonWriter::end_object() {
    FRUGAL_CHECK(!stack_.empty() && stack_.back().is_object && !stack_.back().after_key,
                 "JSON writer: end_object() without an open object, or after a key with no value");
    stack_.pop_back();
    out_ += "}";
    if (stack_.empty()) done_ = true;
    return *this;
}

JsonWriter& JsonWriter::end_array() {
    FRUGAL_CHECK(!stack_.empty() && !stack_.back().is_object, "JSON writer: end_array() without an open array");
    stack_.pop_back();
    out_ += "]";
    if (stack_.empty()) done_ = true;
    return *this;
}

JsonWriter& JsonWriter::value(std::string_view s) { return raw(json_quote(s)); }
JsonWriter& JsonWriter::value(bool b) { return raw(b ? "true" : "false"); }
JsonWriter& JsonWriter::value(double v) { return raw(json_number(v)); }

std::string JsonWriter::str() const {
    FRUGAL_CHECK(done_ && stack_.empty(), "JSON writer: the document is incomplete (", stack_.size(),
                 " object(s) or array(s) open)");
    return out_ + "\n";
}

}  // namespace frugal
