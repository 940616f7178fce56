#include "tests/util.h"

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>

#include "data/prepare.h"
#include "data/shard.h"

namespace frugal::test {

CliResult run_frugal(const std::string& args) {
    const auto t0 = std::chrono::steady_clock::now();
    const std::string cmd = std::string(FRUGAL_BINARY) + " " + args + " 2>&1";
    FILE* p = popen(cmd.c_str(), "r");
    std::string out;
    std::array<char, 4096> buf{};
    size_t n;
    while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
    const int status = pclose(p);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out,
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()};
}

std::filesystem::path test_corpus() {
    namespace fs = std::filesystem;
    static fs::path dir = [] {
        fs::path d = fs::path(FRUGAL_TEST_DATA_DIR) / "corpus";
        // Reused when present and current (a shard that records its end-of-document token).
        if (fs::exists(d / "train.bin") && fs::exists(d / "val.bin")) {
            if (data::ShardReader((d / "train.bin").string()).end_of_document() >= 0) return d;
            fs::remove_all(d);
        }
        data::PrepareOptions opt;
        for (const char* f : {"fortunes", "computers", "science", "wisdom", "people"}) {
            fs::path p = fs::path("/usr/share/games/fortunes") / f;
            if (fs::exists(p)) opt.inputs.push_back(p.string());
        }
        if (opt.inputs.empty()) return fs::path();
        // Prepared in this process's own directory and renamed into place, so that tests run in parallel (ctest -j)
        // never read or write a half-made corpus; when another process renamed first, its identical corpus stays.
        const fs::path staging = d.string() + "." + std::to_string(::getpid());
        opt.out_dir = staging.string();
        opt.val_fraction = 0.05;
        data::prepare_data(opt);
        std::error_code ec;
        fs::rename(staging, d, ec);
        if (ec) fs::remove_all(staging);
        return d;
    }();
    return dir;
}

}  // namespace frugal::test
