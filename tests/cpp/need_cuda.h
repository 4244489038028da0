// The first line of every GPU test: skip without a usable CUDA device, or fail when
// NANOWHALE_REQUIRE_CUDA=1, so that a GPU CI job cannot pass by skipping.
#pragma once
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "core/cuda_device.h"

inline bool cuda_required() {
  const char* e = std::getenv("NANOWHALE_REQUIRE_CUDA");
  return e && std::string(e) == "1";
}

#define NW_NEED_CUDA()                                                                                 \
  do {                                                                                                 \
    if (!nw::cuda::available()) {                                                                      \
      if (cuda_required()) {                                                                           \
        ADD_FAILURE() << "NANOWHALE_REQUIRE_CUDA=1 but no usable CUDA device (or a CPU-only build)";   \
        return;                                                                                        \
      }                                                                                                \
      GTEST_SKIP() << "no CUDA device";                                                                \
    }                                                                                                  \
  } while (0)
