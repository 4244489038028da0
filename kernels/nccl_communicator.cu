// The NCCL backend: all-reduce and broadcast of GPU buffers, bootstrapped over MPI (rank 0's unique id
// is broadcast to the others); host buffers and barriers go over MPI. Built only when CMake finds NCCL.
//
// Collectives run on the compute stream (kernels/stream.cuh), where the model's kernels run, so they
// follow the backward pass without extra synchronisation. Each wait polls the stream until done or the timeout,
// answering MPI liveness pings meanwhile; on a timeout the NCCL communicator is aborted and the error
// names the ranks that did not answer.
#include <nccl.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>

#include "dist/mpi_communicator.h"
#include "kernels/cuda_check.cuh"
#include "kernels/stream.cuh"

namespace nw::dist {

namespace {

#define NW_NCCL_CHECK(call)                                                                                     \
  do {                                                                                                          \
    ncclResult_t r_ = (call);                                                                                   \
    if (r_ != ncclSuccess)                                                                                      \
      throw ::nw::Error(::nw::detail::concat("NCCL error '", ncclGetErrorString(r_), "' in ", #call, " [", __FILE__, \
                                             ":", __LINE__, "]"));                                              \
  } while (0)

ncclDataType_t nccl_type(DType t, const char* what) {
  switch (t) {
    case DType::F32: return ncclFloat32;
    case DType::F64: return ncclFloat64;
    case DType::I64: return ncclInt64;
    default: NW_CHECK(false, what, ": all-reduce takes float32, float64 or int64 buffers, got ", dtype_name(t));
  }
  return ncclFloat32;
}

class NcclCommunicator : public Communicator {
 public:
  explicit NcclCommunicator(std::unique_ptr<MpiCommunicator> host) : host_(std::move(host)) {
    rank_ = host_->rank();
    world_ = host_->world_size();
    local_rank_ = host_->local_rank();
    local_world_ = host_->local_world_size();
    timeout_s_ = host_->timeout();
    int devices = 0;
    NW_CUDA_CHECK(cudaGetDeviceCount(&devices));
    NW_CHECK(devices > 0, "rank ", rank_, ": no GPU is visible for the NCCL backend");
    NW_CUDA_CHECK(cudaSetDevice(local_rank_ % devices));
    ncclUniqueId id{};
    if (rank_ == 0) NW_NCCL_CHECK(ncclGetUniqueId(&id));
    host_->broadcast(Tensor(&id, DType::I32, Device::CPU, {int64_t(sizeof id / 4)}), 0, "NCCL unique id broadcast");
    NW_NCCL_CHECK(ncclCommInitRank(&comm_, world_, id, rank_));
  }
  ~NcclCommunicator() override {
    if (comm_) ncclCommDestroy(comm_);
  }

  const char* backend() const override { return "nccl"; }

  void all_reduce(const Tensor& t, ReduceOp op, const char* what) override {
    if (t.device == Device::CPU) return host_->all_reduce(t, op, what);
    NW_CHECK(t.contiguous(), what, ": all-reduce needs a contiguous buffer, got ", t.describe());
    NW_NCCL_CHECK(ncclAllReduce(t.data, t.data, size_t(t.numel()), nccl_type(t.dtype, what),
                                op == ReduceOp::Max ? ncclMax : ncclSum, comm_, cuda::detail::stream()));
    wait(what);
  }

  void broadcast(const Tensor& t, int root, const char* what) override {
    if (t.device == Device::CPU) return host_->broadcast(t, root, what);
    NW_CHECK(t.contiguous(), what, ": broadcast needs a contiguous buffer, got ", t.describe());
    NW_CHECK(root >= 0 && root < world_, what, ": root ", root, " is not a rank of a world of ", world_);
    NW_NCCL_CHECK(ncclBroadcast(t.data, t.data, t.nbytes(), ncclUint8, root, comm_, cuda::detail::stream()));
    wait(what);
  }

  void barrier(const char* what) override { host_->barrier(what); }
  void set_timeout(double seconds) override {
    Communicator::set_timeout(seconds);
    host_->set_timeout(seconds);
  }
  [[noreturn]] void abort(int code) override {
    host_->abort(code);
    std::abort();  // not reached: MPI_Abort ends the process
  }
  void finalize() override {
    if (comm_) ncclCommDestroy(comm_);
    comm_ = nullptr;
    host_->finalize();
  }

 private:
  void wait(const char* what) {
    const nw_mpi_plugin& mpi = mpi_plugin();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s_);
    for (int spins = 0;; ++spins) {
      const cudaError_t q = cudaStreamQuery(cuda::detail::stream());
      if (q == cudaSuccess) return;
      if (q != cudaErrorNotReady) NW_CUDA_CHECK(q);
      ncclResult_t async = ncclSuccess;
      NW_NCCL_CHECK(ncclCommGetAsyncError(comm_, &async));
      NW_CHECK(async == ncclSuccess, what, " failed on rank ", rank_, ": NCCL error '", ncclGetErrorString(async), "'");
      mpi.answer_pings();
      if (std::chrono::steady_clock::now() >= deadline) break;
      if (spins > 1000) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    char diag[512] = {0};
    mpi.silent_ranks(timeout_s_ < 20 ? timeout_s_ : 20, diag, sizeof diag);
    ncclCommAbort(comm_);
    comm_ = nullptr;
    throw Error(detail::concat(what, " (NCCL) did not complete within ", timeout_s_, " s on rank ", rank_, " of ",
                               world_, ": ", diag));
  }

  std::unique_ptr<MpiCommunicator> host_;
  ncclComm_t comm_ = nullptr;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<MpiCommunicator> host) {
  return std::make_unique<NcclCommunicator>(std::move(host));
}

}  // namespace nw::dist
