// The C interface between the core library and the MPI plugin (csrc/dist_mpi/, built as its own shared
// library only when CMake finds MPI). The core dlopens the plugin when a communicator is first asked
// for, so `import nanowhale._C` and single-process runs never load libmpi, and a build without MPI
// still links. Plain C types only: the plugin and the core may be built by different compilers.
#pragma once
#include <stdint.h>

#define NW_MPI_PLUGIN_ABI 1

extern "C" {

enum nw_mpi_dtype { NW_MPI_F32 = 0, NW_MPI_F64 = 1, NW_MPI_I64 = 2, NW_MPI_BYTE = 3 };
enum nw_mpi_op { NW_MPI_SUM = 0, NW_MPI_MAX = 1 };

// Every call returns 0 on success; otherwise it writes a message (naming the ranks that did not answer,
// on a timeout) into err[0..err_len) and returns nonzero. Collectives wait at most timeout_s seconds.
struct nw_mpi_plugin {
  int abi;
  int (*init)(int* rank, int* world, int* local_rank, int* local_world, char* err, int err_len);
  int (*all_reduce)(void* buf, int64_t count, int dtype, int op, double timeout_s, const char* what, char* err,
                    int err_len);
  int (*broadcast)(void* buf, int64_t nbytes, int root, double timeout_s, const char* what, char* err,
                   int err_len);
  int (*barrier)(double timeout_s, const char* what, char* err, int err_len);
  // Liveness, for collectives that run elsewhere (NCCL): a rank waiting on one calls answer_pings() in
  // its wait loop; a rank whose wait timed out calls silent_ranks(), which pings every rank, waits up to
  // grace_s for the answers and writes the ranks that stayed silent into err (returns how many).
  void (*answer_pings)(void);
  int (*silent_ranks)(double grace_s, char* err, int err_len);
  void (*abort)(int code);  // ends every rank of the job
  void (*finalize)(void);
};

typedef const nw_mpi_plugin* (*nw_mpi_plugin_get_fn)(void);
// The one exported symbol of the plugin.
const nw_mpi_plugin* nw_mpi_plugin_get(void);
}
