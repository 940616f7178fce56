// A registry of configuration keys. Each module's Config struct registers its members here with a dotted key, a
// type, a documented meaning and a legal range; the YAML loader (trainer/) and `--set key=value` go through it, and
// `frugal config --docs` prints docs/config.md from it, so code and documentation cannot drift apart.
//
// A bad value throws ConfigError naming the key, the value and what is accepted.
#pragma once

#include <functional>
#include <limits>
#include <string>
#include <vector>

namespace frugal {

struct ConfigField {
    std::string key;
    std::string type;  // "int", "float", "bool", "string", "list"
    std::string doc;
    std::string default_value;
    std::string accepted;  // human-readable range or choices
    std::function<void(const std::string&)> set;
    std::function<std::string()> get;
    bool is_list = false;
};

class ConfigFields {
  public:
    void add(const std::string& key, int64_t* p, const std::string& doc, int64_t min = 0,
             int64_t max = std::numeric_limits<int64_t>::max());
    void add(const std::string& key, double* p, const std::string& doc, double min = -1e300, double max = 1e300);
    void add(const std::string& key, bool* p, const std::string& doc);
    // choices empty: any string.
    void add(const std::string& key, std::string* p, const std::string& doc, std::vector<std::string> choices = {});
    // A list of strings, each from choices when given. From a string it parses "a,b,c" or "[a, b, c]".
    void add(const std::string& key, std::vector<std::string>* p, const std::string& doc,
             std::vector<std::string> choices = {});

    const ConfigField* find(const std::string& key) const;
    // The known key closest to key (edit distance), for "did you mean" messages.
    std::string nearest(const std::string& key) const;
    const std::vector<ConfigField>& fields() const { return fields_; }

    // Sets key from its textual value; throws ConfigError for an unknown key or a bad value. `origin` (file:line or
    // "--set") is quoted in the message.
    void set(const std::string& key, const std::string& value, const std::string& origin) const;

  private:
    std::vector<ConfigField> fields_;
};

size_t edit_distance(const std::string& a, const std::string& b);

}  // namespace frugal
