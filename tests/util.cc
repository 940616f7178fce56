#include "tests/util.h"

#include "data/prepare.h"

namespace frugal::test {

std::filesystem::path test_corpus() {
    namespace fs = std::filesystem;
    static fs::path dir = [] {
        fs::path d = fs::path(FRUGAL_TEST_DATA_DIR) / "corpus";
        if (fs::exists(d / "train.bin") && fs::exists(d / "val.bin")) return d;
        data::PrepareOptions opt;
        for (const char* f : {"fortunes", "computers", "science", "wisdom", "people"}) {
            fs::path p = fs::path("/usr/share/games/fortunes") / f;
            if (fs::exists(p)) opt.inputs.push_back(p.string());
        }
        if (opt.inputs.empty()) return fs::path();
        opt.out_dir = d.string();
        opt.val_fraction = 0.05;
        data::prepare_data(opt);
        return d;
    }();
    return dir;
}

}  // namespace frugal::test
