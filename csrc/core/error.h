// Errors: the C++ side always throws, never exits. ValueError derives from std::invalid_argument,
// which pybind11 turns into Python's ValueError; Error becomes RuntimeError.
#pragma once
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
}  // namespace detail

}  // namespace nw

// NW_CHECK(cond, "message parts", ...): throws ValueError for bad arguments, with the source location.
#define NW_CHECK(cond, ...)                                                                   \
  do {                                                                                        \
    if (!(cond))                                                                              \
      throw ::nw::ValueError(::nw::detail::concat(__VA_ARGS__, " [", __FILE__, ":", __LINE__, \
                                                  "]"));                                      \
  } while (0)

// NW_ASSERT: an internal invariant; failing it is a bug in nanowhale, reported as RuntimeError.
#define NW_ASSERT(cond, ...)                                                                  \
  do {                                                                                        \
    if (!(cond))                                                                              \
      throw ::nw::Error(::nw::detail::concat("internal error: ", __VA_ARGS__, " [", __FILE__, \
                                             ":", __LINE__, "]"));                            \
  } while (0)
