#include "core/flags.h"

#include <algorithm>
#include <sstream>

#include "core/config_fields.h"
#include "core/error.h"

namespace frugal {

namespace {

std::vector<std::string> names_of(const Flag& f) {
    std::vector<std::string> out;
    std::stringstream ss(f.name);
    std::string n;
    while (std::getline(ss, n, ',')) out.push_back(n);
    return out;
}

std::string main_name(const Flag& f) { return names_of(f).front(); }

const Flag* find_flag(const std::vector<Flag>& flags, const std::string& name) {
    for (const Flag& f : flags)
        for (const std::string& n : names_of(f))
            if (n == name) return &f;
    return nullptr;
}

std::string valid_list(const std::vector<Flag>& flags) {
    std::string s;
    for (const Flag& f : flags) {
        std::string names = f.name;
        std::replace(names.begin(), names.end(), ',', '|');
        s += (s.empty() ? "" : ", ") + names;
    }
    return (s.empty() ? "none" : s) + ", --help";
}

}  // namespace

std::string ParsedFlags::get(const std::string& name, const std::string& fallback) const {
    auto it = values.find(name);
    return it == values.end() || it->second.empty() ? fallback : it->second.back();
}

const std::vector<std::string>& ParsedFlags::all(const std::string& name) const {
    static const std::vector<std::string> kNone;
    auto it = values.find(name);
    return it == values.end() ? kNone : it->second;
}

std::string unknown_flag_message(const std::string& command, const std::string& flag, const std::vector<Flag>& flags) {
    std::string nearest;
    size_t best = std::string::npos;
    for (const Flag& f : flags)
        for (const std::string& n : names_of(f)) {
            const size_t d = edit_distance(flag, n);
            if (d < best) {
                best = d;
                nearest = main_name(f);
            }
        }
    // A suggestion only when it is a near miss, not any flag at all.
    const bool near = !nearest.empty() && best <= std::max<size_t>(2, flag.size() / 3);
    return command + ": unknown option '" + flag + "'" + (near ? "; did you mean '" + nearest + "'?" : ".") +
           " Valid options: " + valid_list(flags) + " (see " + command + " --help)";
}

std::string missing_value_message(const std::string& command, const Flag& flag, const std::vector<Flag>& flags) {
    return command + ": " + main_name(flag) + " needs a value (" + main_name(flag) + " " + flag.placeholder +
           "). Valid options: " + valid_list(flags) + " (see " + command + " --help)";
}

ParsedFlags parse_flags(const std::string& command, const std::vector<Flag>& flags,
                        const std::vector<std::string>& args) {
    ParsedFlags p;
    for (size_t i = 0; i < args.size(); ++i) {
        const std::string& a = args[i];
        if (a == "-h" || a == "--help") {
            p.values["--help"].push_back("");
            continue;
        }
        if (a.size() < 2 || a[0] != '-') {
            p.positional.push_back(a);
            continue;
        }
        const size_t eq = a.rfind("--", 0) == 0 ? a.find('=') : std::string::npos;
        const std::string name = a.substr(0, eq);
        const Flag* f = find_flag(flags, name);
        if (!f) FRUGAL_CONFIG_ERROR(unknown_flag_message(command, name, flags));
        const std::string key = main_name(*f);
        if (f->placeholder.empty()) {
            FRUGAL_CONFIG_CHECK(eq == std::string::npos, command, ": ", key, " takes no value (got '", a, "')");
            p.values[key].push_back("");
            continue;
        }
        std::string v;
        if (eq != std::string::npos) {
            v = a.substr(eq + 1);
        } else {
            // The next argument is the value unless it is missing or is itself one of the flags.
            if (i + 1 >= args.size() || find_flag(flags, args[i + 1]) || args[i + 1] == "--help")
                FRUGAL_CONFIG_ERROR(missing_value_message(command, *f, flags));
            v = args[++i];
        }
        FRUGAL_CONFIG_CHECK(f->repeatable || !p.has(key), command, ": ", key, " given twice ('", p.get(key), "' and '",
                            v, "'): give it once");
        p.values[key].push_back(v);
    }
    return p;
}

std::string flags_help(const std::vector<Flag>& flags) {
    constexpr size_t kColumn = 24, kWidth = 120;
    std::string out;
    for (const Flag& f : flags) {
        std::string head = "  " + f.name + (f.placeholder.empty() ? "" : " " + f.placeholder);
        head += head.size() + 2 <= kColumn ? std::string(kColumn - head.size(), ' ') : "\n" + std::string(kColumn, ' ');
        out += head;
        // Word-wrap the meaning under its column.
        size_t col = kColumn;
        std::stringstream words(f.help);
        std::string w;
        bool first = true;
        while (words >> w) {
            if (!first && col + 1 + w.size() > kWidth) {
                out += "\n" + std::string(kColumn, ' ');
                col = kColumn;
                first = true;
            }
            if (!first) {
                out += ' ';
                ++col;
            }
            out += w;
            col += w.size();
            first = false;
        }
        out += "\n";
    }
    return out;
}

}  // namespace frugal
