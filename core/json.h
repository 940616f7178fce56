// A small JSON writer for the documents the CLI prints (`frugal ... --json`): objects, arrays, strings with every
// control character escaped, integers, and doubles in their shortest round-trip form.
//
// Invariants: the text is always one valid JSON value once every object and array is closed (str() checks it);
// a non-finite double (NaN, +-Inf) is written as null, since JSON has no spelling for it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace frugal {

// s as a JSON string literal, quotes included.
std::string json_quote(std::string_view s);
// v as a JSON number; "null" when v is not finite.
std::string json_number(double v);

class JsonWriter {
  public:
    JsonWriter& begin_object();
    JsonWriter& end_object();
    JsonWriter& begin_array();
    JsonWriter& end_array();
    // The name of the next member; only inside an object.
    JsonWriter& key(std::string_view name);

    JsonWriter& value(std::string_view s);
    JsonWriter& value(const char* s) { return value(std::string_view(s)); }
    JsonWriter& value(const std::string& s) { return value(std::string_view(s)); }
    JsonWriter& value(bool b);
    JsonWriter& value(double v);
    template <typename T, typename = std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>>>
    JsonWriter& value(T v) {
        return raw(std::to_string(v));
    }
    JsonWriter& null() { return raw("null"); }

    // key(name) then value(v).
    template <typename T>
    JsonWriter& field(std::string_view name, const T& v) {
        key(name);
        return value(v);
    }
    // An array of numbers or strings.
    template <typename T>
    JsonWriter& array(std::string_view name, const std::vector<T>& items) {
        key(name).begin_array();
        for (const T& x : items) value(x);
        return end_array();
    }

    // The finished document with a final newline; throws Error when an object or array is still open.
    std::string str() const;

  private:
    JsonWriter& raw(const std::string& token);
    void separate();  // the comma before a value or key, and the check that a value may come here

    std::string out_;
    struct Level {
        bool is_object;
        bool empty = true;
        bool after_key = false;
    };
    std::vector<Level> stack_;
    bool done_ = false;  // a complete top-level value was written
};

}  // namespace frugal
