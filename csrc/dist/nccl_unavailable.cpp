// The NCCL backend of a build without NCCL (no CUDA, or CMake found no nccl.h / libnccl): an Error.
#include "core/error.h"
#include "dist/mpi_communicator.h"

namespace nw::dist {

std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<MpiCommunicator>) {
  throw Error("data-parallel training on GPUs needs NCCL, and nanowhale was built without it (CMake found no "
              "CUDA toolkit with nccl.h and libnccl; install NCCL and reinstall nanowhale)");
}

}  // namespace nw::dist
