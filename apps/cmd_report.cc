#include <cstdio>
#include <filesystem>

#include "accounting/report.h"
#include "apps/commands.h"
#include "core/error.h"

namespace frugal::apps {

int cmd_report(const Args& args) {
    if (args.empty() || wants_help(args)) {
        std::fputs(
            "usage: frugal report RUN_DIR\n\nPrints the cost report of a run again from RUN_DIR/cost.json: "
            "device-hours and dollars per phase, MFU, projection.\n",
            args.empty() ? stderr : stdout);
        return args.empty() ? 2 : 0;
    }
    const std::filesystem::path dir(args[0]);
    const std::filesystem::path cost = std::filesystem::is_directory(dir) ? dir / "cost.json" : dir;
    FRUGAL_CONFIG_CHECK(std::filesystem::exists(cost), cost.string(),
                        " does not exist: give the run.out_dir of a frugal train run");
    std::fputs(accounting::format_report(accounting::read_cost_json(cost.string())).c_str(), stdout);
    return 0;
}

}  // namespace frugal::apps
