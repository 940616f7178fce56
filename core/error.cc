#include "core/error.h"

#include <string_view>

namespace frugal::detail {

std::string where(const char* file, int line) {
    // The last two path components ("moe/router.cc:42") locate any file in this tree and read better than an
    // absolute build path.
    std::string_view path(file);
    size_t cut = path.rfind('/');
    if (cut != std::string_view::npos && cut > 0) {
        size_t prev = path.rfind('/', cut - 1);
        if (prev != std::string_view::npos) path = path.substr(prev + 1);
    }
    return std::string(path) + ":" + std::to_string(line);
}

}  // namespace frugal::detail
