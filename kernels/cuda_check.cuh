// CUDA error checking that throws (never exits), with file:line.
#pragma once
#include <cuda_runtime.h>

#include "core/error.h"

#define NW_CUDA_CHECK(call)                                                                              \
  do {                                                                                                   \
    cudaError_t err_ = (call);                                                                           \
    if (err_ != cudaSuccess)                                                                             \
      throw ::nw::Error(::nw::detail::concat("CUDA error '", cudaGetErrorString(err_), "' in ", #call, " [", \
                                             __FILE__, ":", __LINE__, "]"));                             \
  } while (0)
