// Data-parallel communication between the processes of one job (mpirun / srun): rank, world size, and
// in-place collectives over flat buffers. The backend follows the device: MPI for CPU buffers, NCCL for
// GPU buffers (its unique id broadcast over MPI, which also carries the host-side reductions).
//
// MPI is reached through a plugin the core dlopens on first use (see mpi_plugin_api.h), so a build or a
// machine without MPI imports and trains in one process as usual; asking for a communicator there is an
// Error that says why. Every collective waits at most timeout() seconds; a timeout is an Error naming
// the ranks that did not answer, and abort() then ends the whole job.
#pragma once
#include <memory>
#include <string>

#include "core/tensor.h"

namespace nw::dist {

enum class ReduceOp { Sum, Max };

class Communicator {
 public:
  virtual ~Communicator() = default;
  int rank() const { return rank_; }
  int world_size() const { return world_; }
  int local_rank() const { return local_rank_; }        // among the ranks on this machine
  int local_world_size() const { return local_world_; }
  virtual const char* backend() const = 0;             // "mpi" or "nccl"
  double timeout() const { return timeout_s_; }
  virtual void set_timeout(double seconds);

  // In place, the same dtype and element count on every rank; `what` names the collective in errors.
  // A contiguous F32, F64 or I64 tensor (host or, for NCCL, device memory).
  virtual void all_reduce(const Tensor& t, ReduceOp op, const char* what) = 0;
  virtual void broadcast(const Tensor& t, int root, const char* what) = 0;  // any contiguous tensor
  virtual void barrier(const char* what) = 0;
  [[noreturn]] virtual void abort(int code) = 0;  // ends every process of the job
  virtual void finalize() = 0;  // unusable after; MPI is also finalized at a normal process exit

 protected:
  int rank_ = 0, world_ = 1, local_rank_ = 0, local_world_ = 1;
  double timeout_s_ = 300;
};

// MPI for Device::CPU, NCCL bootstrapped over MPI for Device::CUDA (which also selects this process's
// GPU: local rank modulo the visible devices). One per process.
std::unique_ptr<Communicator> make_communicator(Device device, double timeout_s);

// Whether the MPI plugin loads here; otherwise *why says what is missing.
bool mpi_available(std::string* why = nullptr);

}  // namespace nw::dist
