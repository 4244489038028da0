// Errors: the C++ side always throws, never exits. ValueError derives from std::invalid_argument,
// which pybind11 turns into Python's ValueError; Error becomes RuntimeError.
#pragma once
#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <string>

namespace nw {

struct ValueError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

// " [csrc/x.cpp:12]" only when NANOWHALE_DEBUG is set (and not "0"): a user's error message should not
// end with the build machine's source paths, a developer chasing one wants them.
inline std::string location(const char* file, int line) {
  const char* debug = std::getenv("NANOWHALE_DEBUG");
  if (debug == nullptr || *debug == '\0' || std::string(debug) == "0") return "";
  return concat(" [", file, ":", line, "]");
}
}  // namespace detail

}  // namespace nw

// NW_CHECK(cond, "message parts", ...): throws ValueError for bad arguments (with the source location
// under NANOWHALE_DEBUG=1).
#define NW_CHECK(cond, ...)                                                                              \
  do {                                                                                                   \
    if (!(cond))                                                                                         \
      throw ::nw::ValueError(::nw::detail::concat(__VA_ARGS__, ::nw::detail::location(__FILE__, __LINE__))); \
  } while (0)

// NW_ASSERT: an internal invariant; failing it is a bug in nanowhale, reported as RuntimeError.
#define NW_ASSERT(cond, ...)                                                                  \
  do {                                                                                        \
    if (!(cond))                                                                              \
      throw ::nw::Error(::nw::detail::concat("internal error: ", __VA_ARGS__, " [", __FILE__, \
                                             ":", __LINE__, "]"));                            \
  } while (0)
