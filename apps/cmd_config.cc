// frugal config: the reference of every configuration key (--docs), or a resolved configuration (--print), as text
// or (--json) as one JSON document.
#include <cstdio>
#include <sstream>

#include "apps/cli_output.h"
#include "apps/commands.h"
#include "core/error.h"
#include "core/flags.h"
#include "core/json.h"
#include "trainer/run_config.h"

namespace frugal::apps {

namespace {
const std::vector<Flag> kFlags = {
    {"--docs", "", "print the reference of every configuration key (the text of docs/config.md)"},
    {"--print", "CONFIG.yaml", "load and validate CONFIG with its overrides, print the resolved configuration as YAML"},
    {"--set", "key=value", "with --print: override one configuration key (repeatable)", true},
    {"--json", "",
     "one JSON object instead: with --docs {\"keys\": [{key, type, default, accepted, doc}, ...]}, with --print the "
     "resolved configuration, {section: {key: value}} with numbers, booleans, strings and lists typed"}};

std::string help() {
    return "usage: frugal config --docs [--json]\n"
           "       frugal config --print CONFIG.yaml [--set key=value]... [--json]\n\n" +
           flags_help(kFlags);
}

// A list field's text "[a, b]" as its items.
std::vector<std::string> list_items(const std::string& text) {
    std::vector<std::string> items;
    const std::string inner = text.size() >= 2 ? text.substr(1, text.size() - 2) : "";
    std::stringstream ss(inner);
    std::string item;
    while (std::getline(ss, item, ',')) {
        const size_t b = item.find_first_not_of(' ');
        if (b != std::string::npos) items.push_back(item.substr(b, item.find_last_not_of(' ') - b + 1));
    }
    return items;
}

void typed_value(JsonWriter& w, const ConfigField& f) {
    const std::string v = f.get();
    if (f.is_list) {
        w.begin_array();
        for (const std::string& item : list_items(v)) w.value(item);
        w.end_array();
    } else if (f.type == "int") {
        w.value(int64_t(std::stoll(v)));
    } else if (f.type == "float") {
        w.value(std::stod(v));
    } else if (f.type == "bool") {
        w.value(v == "true");
    } else {
        w.value(v);
    }
}

std::string resolved_json(trainer::TrainConfig& cfg) {
    ConfigFields fields = cfg.fields();
    JsonWriter w;
    w.begin_object();
    std::string section;
    for (const ConfigField& f : fields.fields()) {
        const std::string s = f.key.substr(0, f.key.find('.'));
        if (s != section) {
            if (!section.empty()) w.end_object();
            section = s;
            w.key(s).begin_object();
        }
        w.key(f.key.substr(s.size() + 1));
        typed_value(w, f);
    }
    if (!section.empty()) w.end_object();
    return w.end_object().str();
}

std::string docs_json() {
    trainer::TrainConfig cfg;
    ConfigFields fields = cfg.fields();
    JsonWriter w;
    w.begin_object().key("keys").begin_array();
    for (const ConfigField& f : fields.fields())
        w.begin_object()
            .field("key", f.key)
            .field("type", f.type)
            .field("default", f.default_value)
            .field("accepted", f.accepted)
            .field("doc", f.doc)
            .end_object();
    return w.end_array().end_object().str();
}
}  // namespace

int cmd_config(const Args& args) {
    const ParsedFlags f = parse_flags("frugal config", kFlags, args);
    if (args.empty() || f.has("--help")) {
        std::fputs(help().c_str(), args.empty() ? stderr : stdout);
        return args.empty() ? 2 : 0;
    }
    FRUGAL_CONFIG_CHECK(f.positional.empty(), "frugal config: unexpected argument '",
                        f.positional.empty() ? "" : f.positional[0], "' (see frugal config --help)");
    FRUGAL_CONFIG_CHECK(f.has("--docs") != f.has("--print"),
                        "frugal config: give one of --docs or --print CONFIG.yaml");
    FRUGAL_CONFIG_CHECK(f.has("--print") || !f.has("--set"), "frugal config: --set applies to --print only");
    const bool json = f.has("--json");
    JsonStdout out(json);
    if (f.has("--docs")) {
        out.print(json ? docs_json() : trainer::config_docs());
        return 0;
    }
    trainer::TrainConfig cfg = trainer::load_config(f.get("--print"), f.all("--set"), 1);
    out.print(json ? resolved_json(cfg) : trainer::to_yaml(cfg));
    return 0;
}

}  // namespace frugal::apps
