#include "dist/communicator.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>

#include "core/error.h"
#include "dist/mpi_communicator.h"

namespace nw::dist {

namespace {

constexpr int kErrLen = 1024;
constexpr const char* kPluginFile = "libnanowhale_mpi.so";

// Next to the binary holding this code: the Python module's directory, or the test binary's.
std::string default_plugin_path() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&default_plugin_path), &info) == 0 || info.dli_fname == nullptr) return kPluginFile;
  std::string self = info.dli_fname;
  const size_t slash = self.rfind('/');
  return slash == std::string::npos ? kPluginFile : self.substr(0, slash + 1) + kPluginFile;
}

struct Loaded {
  const nw_mpi_plugin* api = nullptr;
  std::string error;
};

const Loaded& load_plugin() {
  static Loaded loaded;
  static std::once_flag once;
  std::call_once(once, [] {
    const char* env = std::getenv("NANOWHALE_MPI_PLUGIN");
    const std::string path = env && *env ? env : default_plugin_path();
    // RTLD_GLOBAL: Open MPI loads its own components later, and they need libmpi's symbols.
    void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL);
    if (!h) {
      const char* e = dlerror();
      loaded.error = std::string("cannot load the MPI plugin ") + path + ": " + (e ? e : "unknown error") +
                     " (nanowhale builds it only when CMake finds MPI: install an MPI such as Debian's "
                     "libopenmpi-dev, then reinstall nanowhale)";
      return;
    }
    auto get = reinterpret_cast<nw_mpi_plugin_get_fn>(dlsym(h, "nw_mpi_plugin_get"));
    const nw_mpi_plugin* api = get ? get() : nullptr;
    if (!api || api->abi != NW_MPI_PLUGIN_ABI) {
      loaded.error = path + " is not a matching nanowhale MPI plugin (reinstall nanowhale)";
      return;
    }
    loaded.api = api;
  });
  return loaded;
}

void check(int rc, const char* err) {
  if (rc != 0) throw Error(err);
}

int mpi_dtype(DType t, const char* what) {
  switch (t) {
    case DType::F32: return NW_MPI_F32;
    case DType::F64: return NW_MPI_F64;
    case DType::I64: return NW_MPI_I64;
    default: NW_CHECK(false, what, ": all-reduce takes float32, float64 or int64 buffers, got ", dtype_name(t));
  }
  return 0;
}

}  // namespace

void Communicator::set_timeout(double seconds) {
  NW_CHECK(seconds > 0, "communicator timeout must be > 0 seconds, got ", seconds);
  timeout_s_ = seconds;
}

bool mpi_available(std::string* why) {
  const Loaded& l = load_plugin();
  if (why) *why = l.error;
  return l.api != nullptr;
}

const nw_mpi_plugin& mpi_plugin() {
  const Loaded& l = load_plugin();
  if (!l.api) throw Error(l.error);
  return *l.api;
}

MpiCommunicator::MpiCommunicator(double timeout_s) {
  set_timeout(timeout_s);
  char err[kErrLen] = {0};
  check(mpi_plugin().init(&rank_, &world_, &local_rank_, &local_world_, err, kErrLen), err);
}

void MpiCommunicator::all_reduce(const Tensor& t, ReduceOp op, const char* what) {
  NW_CHECK(t.device == Device::CPU, what, ": the MPI backend reduces host buffers, got ", t.describe());
  NW_CHECK(t.contiguous(), what, ": all-reduce needs a contiguous buffer, got ", t.describe());
  const int dtype = mpi_dtype(t.dtype, what);
  char err[kErrLen] = {0};
  check(mpi_plugin().all_reduce(t.data, t.numel(), dtype, op == ReduceOp::Max ? NW_MPI_MAX : NW_MPI_SUM, timeout_s_,
                                what, err, kErrLen), err);
}

void MpiCommunicator::broadcast(const Tensor& t, int root, const char* what) {
  NW_CHECK(t.device == Device::CPU, what, ": the MPI backend broadcasts host buffers, got ", t.describe());
  NW_CHECK(t.contiguous(), what, ": broadcast needs a contiguous buffer, got ", t.describe());
  NW_CHECK(root >= 0 && root < world_, what, ": root ", root, " is not a rank of a world of ", world_);
  char err[kErrLen] = {0};
  check(mpi_plugin().broadcast(t.data, int64_t(t.nbytes()), root, timeout_s_, what, err, kErrLen), err);
}

void MpiCommunicator::barrier(const char* what) {
  char err[kErrLen] = {0};
  check(mpi_plugin().barrier(timeout_s_, what, err, kErrLen), err);
}

void MpiCommunicator::abort(int code) {
  mpi_plugin().abort(code);
  std::abort();  // MPI_Abort does not return; if an MPI lets it, end this process at least
}

void MpiCommunicator::finalize() { mpi_plugin().finalize(); }

std::unique_ptr<Communicator> make_communicator(Device device, double timeout_s) {
  auto host = std::make_unique<MpiCommunicator>(timeout_s);
  if (device == Device::CPU) return host;
  return make_nccl_communicator(std::move(host));
}

}  // namespace nw::dist
