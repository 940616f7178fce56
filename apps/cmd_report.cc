// frugal report: a run's cost report again, as text or (--json) as the document the run wrote to cost.json.
#include <cstdio>
#include <filesystem>

#include "accounting/report.h"
#include "apps/cli_output.h"
#include "apps/commands.h"
#include "core/error.h"
#include "core/flags.h"

namespace frugal::apps {

namespace {
const std::vector<Flag> kFlags = {
    {"--json", "", "print one JSON object, the fields of RUN_DIR/cost.json (see docs/accounting.md)"}};
}

int cmd_report(const Args& args) {
    const ParsedFlags f = parse_flags("frugal report", kFlags, args);
    if (args.empty() || f.has("--help")) {
        std::fputs(("usage: frugal report RUN_DIR [--json]\n\nPrints the cost report of a run again from "
                    "RUN_DIR/cost.json: device-hours and dollars per phase, MFU, projection.\n\n" +
                    flags_help(kFlags))
                       .c_str(),
                   args.empty() ? stderr : stdout);
        return args.empty() ? 2 : 0;
    }
    FRUGAL_CONFIG_CHECK(f.positional.size() == 1, "frugal report: give exactly one RUN_DIR (got ", f.positional.size(),
                        ")");
    JsonStdout out(f.has("--json"));
    const std::filesystem::path dir(f.positional[0]);
    const std::filesystem::path cost = std::filesystem::is_directory(dir) ? dir / "cost.json" : dir;
    FRUGAL_CONFIG_CHECK(std::filesystem::exists(cost), cost.string(),
                        " does not exist: give the run.out_dir of a frugal train run");
    const accounting::CostReport r = accounting::read_cost_json(cost.string());
    out.print(f.has("--json") ? accounting::to_json(r) : accounting::format_report(r));
    return 0;
}

}  // namespace frugal::apps
