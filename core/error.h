// Errors: FRUGAL_CHECK is always on (never compiled out) and throws frugal::Error with file:line and a message
// built from its arguments. A message names the values seen, the config key involved and the fix.
// ConfigError is the class for bad user input: the CLI maps it to exit code 2.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace frugal {

class Error : public std::runtime_error {
  public:
    Error(const std::string& where, const std::string& what) : std::runtime_error(what), where_(where) {}
    // "file.cc:123" of the check that failed.
    const std::string& where() const { return where_; }

  private:
    std::string where_;
};

// Bad configuration or command-line input: reported with exit code 2, before any allocation.
class ConfigError : public Error {
  public:
    using Error::Error;
};

namespace detail {
template <typename... Args>
std::string concat(const Args&... args) {
    std::ostringstream os;
    (os << ... << args);
    return os.str();
}
std::string where(const char* file, int line);
}  // namespace detail

}  // namespace frugal

#define FRUGAL_CHECK(cond, ...)                                                                         \
    do {                                                                                                \
        if (!(cond)) [[unlikely]]                                                                       \
            throw ::frugal::Error(::frugal::detail::where(__FILE__, __LINE__),                          \
                                  ::frugal::detail::concat("check failed (" #cond "): ", __VA_ARGS__)); \
    } while (0)

#define FRUGAL_CONFIG_CHECK(cond, ...)                                               \
    do {                                                                             \
        if (!(cond)) [[unlikely]]                                                    \
            throw ::frugal::ConfigError(::frugal::detail::where(__FILE__, __LINE__), \
                                        ::frugal::detail::concat(__VA_ARGS__));      \
    } while (0)

#define FRUGAL_THROW(...) \
    throw ::frugal::Error(::frugal::detail::where(__FILE__, __LINE__), ::frugal::detail::concat(__VA_ARGS__))

#define FRUGAL_CONFIG_ERROR(...) \
    throw ::frugal::ConfigError(::frugal::detail::where(__FILE__, __LINE__), ::frugal::detail::concat(__VA_ARGS__))
