// The MPI communicator (host buffers), and access to the loaded MPI plugin for the NCCL backend.
#pragma once
#include "dist/communicator.h"
#include "dist/mpi_plugin_api.h"

namespace nw::dist {

// The plugin's functions; loads libnanowhale_mpi.so on first use (next to the module, or the path in
// $NANOWHALE_MPI_PLUGIN). Error when it cannot be loaded.
const nw_mpi_plugin& mpi_plugin();

class MpiCommunicator : public Communicator {
 public:
  explicit MpiCommunicator(double timeout_s);
  const char* backend() const override { return "mpi"; }
  void all_reduce(const Tensor& t, ReduceOp op, const char* what) override;
  void broadcast(const Tensor& t, int root, const char* what) override;
  void barrier(const char* what) override;
  [[noreturn]] void abort(int code) override;
  void finalize() override;
};

// NCCL for device tensors, `host` (MPI) for host tensors; defined in kernels/nccl_communicator.cu, or
// in csrc/dist/nccl_unavailable.cpp (an Error) when the build has no NCCL.
std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<MpiCommunicator> host);

}  // namespace nw::dist
