#include "core/config_fields.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <sstream>

#include "core/error.h"

namespace frugal {

namespace {
std::string trim(const std::string& s) {
    size_t b = s.find_first_not_of(" \t\r\n");
    size_t e = s.find_last_not_of(" \t\r\n");
    return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

std::string format_double(double v) {
    std::ostringstream os;
    os.precision(10);
    os << v;
    return os.str();
}

std::string join(const std::vector<std::string>& v, const std::string& sep) {
    std::string out;
    for (size_t i = 0; i < v.size(); ++i) out += (i ? sep : "") + v[i];
    return out;
}
}  // namespace

size_t edit_distance(const std::string& a, const std::string& b) {
    std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
        cur[0] = i;
        for (size_t j = 1; j <= b.size(); ++j)
            cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
        std::swap(prev, cur);
    }
    return prev[b.size()];
}

void ConfigFields::add(const std::string& key, int64_t* p, const std::string& doc, int64_t min, int64_t max) {
    std::string accepted = "integer >= " + std::to_string(min);
    if (max != std::numeric_limits<int64_t>::max())
        accepted = "integer in [" + std::to_string(min) + ", " + std::to_string(max) + "]";
    fields_.push_back({key, "int", doc, std::to_string(*p), accepted,
                       [=](const std::string& raw) {
                           std::string v = trim(raw);
                           char* end = nullptr;
                           errno = 0;
                           long long x = std::strtoll(v.c_str(), &end, 10);
                           if (v.empty() || *end != '\0' || errno)
                               FRUGAL_CONFIG_ERROR(key, ": expected an integer, got '", raw, "'");
                           if (x < min || x > max)
                               FRUGAL_CONFIG_ERROR(key, " = ", x, " is out of range: expected ", accepted);
                           *p = x;
                       },
                       [=] { return std::to_string(*p); }});
}

void ConfigFields::add(const std::string& key, double* p, const std::string& doc, double min, double max) {
    std::string accepted = "number";
    if (min > -1e300 && max < 1e300)
        accepted = "number in [" + format_double(min) + ", " + format_double(max) + "]";
    else if (min > -1e300)
        accepted = "number >= " + format_double(min);
    fields_.push_back({key, "float", doc, format_double(*p), accepted,
                       [=](const std::string& raw) {
                           std::string v = trim(raw);
                           char* end = nullptr;
                           errno = 0;
                           double x = std::strtod(v.c_str(), &end);
                           if (v.empty() || *end != '\0' || errno || x != x)
                               FRUGAL_CONFIG_ERROR(key, ": expected a number, got '", raw, "'");
                           if (x < min || x > max)
                               FRUGAL_CONFIG_ERROR(key, " = ", raw, " is out of range: expected ", accepted);
                           *p = x;
                       },
                       [=] { return format_double(*p); }});
}

void ConfigFields::add(const std::string& key, bool* p, const std::string& doc) {
    fields_.push_back({key, "bool", doc, *p ? "true" : "false", "true or false",
                       [=](const std::string& raw) {
                           std::string v = trim(raw);
                           if (v == "true" || v == "True" || v == "yes" || v == "1")
                               *p = true;
                           else if (v == "false" || v == "False" || v == "no" || v == "0")
                               *p = false;
                           else
                               FRUGAL_CONFIG_ERROR(key, ": expected true or false, got '", raw, "'");
                       },
                       [=] { return std::string(*p ? "true" : "false"); }});
}

void ConfigFields::add(const std::string& key, std::string* p, const std::string& doc,
                       std::vector<std::string> choices) {
    std::string accepted = choices.empty() ? "string" : "one of: " + join(choices, ", ");
    fields_.push_back({key, "string", doc, *p, accepted,
                       [=](const std::string& raw) {
                           std::string v = trim(raw);
                           if (!choices.empty() && std::find(choices.begin(), choices.end(), v) == choices.end())
                               FRUGAL_CONFIG_ERROR(key, " = '", raw, "' is not accepted: expected ", accepted);
                           *p = v;
                       },
                       [=] { return *p; }});
}

void ConfigFields::add(const std::string& key, std::vector<std::string>* p, const std::string& doc,
                       std::vector<std::string> choices) {
    std::string accepted = choices.empty() ? "list of strings" : "list of: " + join(choices, ", ");
    ConfigField f{key,
                  "list",
                  doc,
                  "[" + join(*p, ", ") + "]",
                  accepted,
                  [=](const std::string& raw) {
                      std::string v = trim(raw);
                      if (!v.empty() && v.front() == '[' && v.back() == ']') v = v.substr(1, v.size() - 2);
                      std::vector<std::string> items;
                      std::stringstream ss(v);
                      std::string item;
                      while (std::getline(ss, item, ',')) {
                          item = trim(item);
                          if (item.empty()) continue;
                          if (!choices.empty() && std::find(choices.begin(), choices.end(), item) == choices.end())
                              FRUGAL_CONFIG_ERROR(key, ": item '", item, "' is not accepted: expected ", accepted);
                          items.push_back(item);
                      }
                      *p = items;
                  },
                  [=] { return "[" + join(*p, ", ") + "]"; }};
    f.is_list = true;
    fields_.push_back(std::move(f));
}

const ConfigField* ConfigFields::find(const std::string& key) const {
    for (const auto& f : fields_)
        if (f.key == key) return &f;
    return nullptr;
}

std::string ConfigFields::nearest(const std::string& key) const {
    std::string best;
    size_t best_d = std::string::npos;
    for (const auto& f : fields_) {
        size_t d = edit_distance(key, f.key);
        // A key given without its section ("lr" for "optim.lr") is also a near miss.
        size_t dot = f.key.rfind('.');
        if (dot != std::string::npos) d = std::min(d, edit_distance(key, f.key.substr(dot + 1)) + 1);
        if (d < best_d) {
            best_d = d;
            best = f.key;
        }
    }
    return best;
}

void ConfigFields::set(const std::string& key, const std::string& value, const std::string& origin) const {
    const ConfigField* f = find(key);
    if (!f) {
        std::string near = nearest(key);
        FRUGAL_CONFIG_ERROR(origin, ": unknown config key '", key, "'",
                            near.empty() ? std::string() : "; did you mean '" + near + "'?",
                            " (every key is listed in docs/config.md)");
    }
    try {
        f->set(value);
    } catch (const ConfigError& e) {
        throw ConfigError(e.where(), origin + ": " + e.what());
    }
}

}  // namespace frugal
