// The MPI plugin: rank, world size and collectives over host buffers, every wait bounded by a timeout.
// Built as its own shared library (libnanowhale_mpi.so) only when CMake finds MPI; the core dlopens it
// (csrc/dist/communicator.cpp), so nothing else in nanowhale links libmpi.
//
// Collectives are non-blocking MPI calls polled until done or until the timeout. While polling, a rank
// answers liveness pings on a separate communicator; a rank whose wait timed out pings every other rank
// and names those that stay silent (dead, stopped, or stuck outside any collective).
#include <mpi.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "dist/mpi_plugin_api.h"

namespace {

constexpr int kTagPing = 1, kTagPong = 2;
MPI_Comm g_world = MPI_COMM_NULL;  // collectives
MPI_Comm g_diag = MPI_COMM_NULL;   // liveness pings, so they never match a collective's messages
int g_rank = 0, g_size = 1;
bool g_we_initialized = false;
int64_t g_collectives = 0;  // collectives issued so far, for messages

using Clock = std::chrono::steady_clock;

void put(char* err, int n, const std::string& msg) {
  if (n <= 0) return;
  std::snprintf(err, size_t(n), "%s", msg.c_str());
}

std::string mpi_error(int code) {
  char s[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, s, &len);
  return std::string(s, size_t(len));
}

void answer_pings() {
  for (;;) {
    int flag = 0;
    MPI_Status st;
    if (MPI_Iprobe(MPI_ANY_SOURCE, kTagPing, g_diag, &flag, &st) != MPI_SUCCESS || !flag) return;
    int64_t seq = 0;
    MPI_Recv(&seq, 1, MPI_INT64_T, st.MPI_SOURCE, kTagPing, g_diag, MPI_STATUS_IGNORE);
    MPI_Request r;  // small, so sent eagerly; never waited on
    MPI_Isend(&g_collectives, 1, MPI_INT64_T, st.MPI_SOURCE, kTagPong, g_diag, &r);
    MPI_Request_free(&r);
  }
}

// Polls (non-blocking collectives progress only inside MPI_Test): spinning for the first 20 ms, the time
// a collective takes when every rank is there, then backing off to 50 us and, after a second, 1 ms
// sleeps, so a rank waiting for a slow one leaves the cores to the others.
template <typename Done>
bool poll_until(Done done, double timeout_s) {
  const auto t0 = Clock::now();
  const auto deadline = t0 + std::chrono::duration<double>(timeout_s);
  for (;;) {
    if (done()) return true;
    answer_pings();
    const auto now = Clock::now();
    if (now >= deadline) return false;
    const double waited = std::chrono::duration<double>(now - t0).count();
    if (waited > 0.02) std::this_thread::sleep_for(std::chrono::microseconds(waited > 1.0 ? 1000 : 50));
  }
}

int silent_ranks(double grace_s, char* err, int n) {
  std::vector<MPI_Request> reqs;
  std::vector<int> peers;
  // Static: a silent rank's answer may still arrive after this returns (the job is being aborted then).
  static std::vector<int64_t> pongs;
  pongs.assign(size_t(g_size), -1);
  for (int p = 0; p < g_size; ++p) {
    if (p == g_rank) continue;
    MPI_Request s, r;
    MPI_Isend(&g_collectives, 1, MPI_INT64_T, p, kTagPing, g_diag, &s);
    MPI_Request_free(&s);
    MPI_Irecv(&pongs[size_t(p)], 1, MPI_INT64_T, p, kTagPong, g_diag, &r);
    reqs.push_back(r);
    peers.push_back(p);
  }
  std::vector<bool> answered(reqs.size(), false);
  poll_until([&] {
    bool all = true;
    for (size_t i = 0; i < reqs.size(); ++i) {
      if (answered[i]) continue;
      int flag = 0;
      MPI_Test(&reqs[i], &flag, MPI_STATUS_IGNORE);
      answered[i] = flag != 0;
      all = all && answered[i];
    }
    return all;
  }, grace_s);
  std::string silent;
  int count = 0;
  for (size_t i = 0; i < reqs.size(); ++i) {
    if (answered[i]) continue;
    silent += (count ? ", " : "") + std::to_string(peers[i]);
    ++count;
  }
  char grace[32];
  std::snprintf(grace, sizeof grace, "%.0f", grace_s);
  if (count)
    put(err, n, (count == 1 ? "rank " : "ranks ") + silent + " did not answer a liveness check within " + grace +
                    " s (dead, stopped, or stuck outside the collective)");
  else
    put(err, n, "every rank answered a liveness check: they are alive but did not all enter this collective "
                "(a rank took another path, or is slower than the timeout)");
  return count;
}

int wait(MPI_Request& req, double timeout_s, const char* what, char* err, int n) {
  int rc = MPI_SUCCESS;
  const bool done = poll_until([&] {
    int flag = 0;
    rc = MPI_Test(&req, &flag, MPI_STATUS_IGNORE);
    return rc != MPI_SUCCESS || flag;
  }, timeout_s);
  if (rc != MPI_SUCCESS) {
    put(err, n, std::string(what) + " failed on rank " + std::to_string(g_rank) + ": " + mpi_error(rc));
    return 1;
  }
  if (done) return 0;
  char diag[512];
  silent_ranks(timeout_s < 20 ? timeout_s : 20, diag, sizeof diag);
  char head[256];
  std::snprintf(head, sizeof head, "%s (collective #%lld) did not complete within %.0f s on rank %d of %d: ", what,
                static_cast<long long>(g_collectives), timeout_s, g_rank, g_size);
  put(err, n, std::string(head) + diag);
  return 1;
}

void finalize();

int init(int* rank, int* world, int* local_rank, int* local_world, char* err, int n) {
  int inited = 0;
  MPI_Initialized(&inited);
  if (!inited) {
    int provided = 0;
    const int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
    if (rc != MPI_SUCCESS) {
      put(err, n, "MPI_Init_thread failed: " + mpi_error(rc));
      return 1;
    }
    g_we_initialized = true;
    std::atexit(finalize);  // a process that exits normally must call MPI_Finalize
  }
  if (g_world == MPI_COMM_NULL) {
    MPI_Comm_dup(MPI_COMM_WORLD, &g_world);
    MPI_Comm_dup(MPI_COMM_WORLD, &g_diag);
    MPI_Comm_set_errhandler(g_world, MPI_ERRORS_RETURN);
    MPI_Comm_set_errhandler(g_diag, MPI_ERRORS_RETURN);
  }
  MPI_Comm_rank(g_world, &g_rank);
  MPI_Comm_size(g_world, &g_size);
  MPI_Comm node;  // the ranks sharing this machine: one GPU each, a share of the cores each
  MPI_Comm_split_type(g_world, MPI_COMM_TYPE_SHARED, g_rank, MPI_INFO_NULL, &node);
  MPI_Comm_rank(node, local_rank);
  MPI_Comm_size(node, local_world);
  MPI_Comm_free(&node);
  *rank = g_rank;
  *world = g_size;
  return 0;
}

MPI_Datatype mpi_type(int dtype) {
  switch (dtype) {
    case NW_MPI_F32: return MPI_FLOAT;
    case NW_MPI_F64: return MPI_DOUBLE;
    case NW_MPI_I64: return MPI_INT64_T;
    default: return MPI_BYTE;
  }
}

int all_reduce(void* buf, int64_t count, int dtype, int op, double timeout_s, const char* what, char* err, int n) {
  if (count > INT32_MAX) {
    put(err, n, std::string(what) + ": " + std::to_string(count) + " elements is more than one MPI call takes");
    return 1;
  }
  ++g_collectives;
  MPI_Request req;
  const int rc = MPI_Iallreduce(MPI_IN_PLACE, buf, int(count), mpi_type(dtype), op == NW_MPI_MAX ? MPI_MAX : MPI_SUM,
                                g_world, &req);
  if (rc != MPI_SUCCESS) {
    put(err, n, std::string(what) + ": MPI_Iallreduce failed: " + mpi_error(rc));
    return 1;
  }
  return wait(req, timeout_s, what, err, n);
}

int broadcast(void* buf, int64_t nbytes, int root, double timeout_s, const char* what, char* err, int n) {
  if (nbytes > INT32_MAX) {
    put(err, n, std::string(what) + ": " + std::to_string(nbytes) + " bytes is more than one MPI call takes");
    return 1;
  }
  ++g_collectives;
  MPI_Request req;
  const int rc = MPI_Ibcast(buf, int(nbytes), MPI_BYTE, root, g_world, &req);
  if (rc != MPI_SUCCESS) {
    put(err, n, std::string(what) + ": MPI_Ibcast failed: " + mpi_error(rc));
    return 1;
  }
  return wait(req, timeout_s, what, err, n);
}

int barrier(double timeout_s, const char* what, char* err, int n) {
  ++g_collectives;
  MPI_Request req;
  const int rc = MPI_Ibarrier(g_world, &req);
  if (rc != MPI_SUCCESS) {
    put(err, n, std::string(what) + ": MPI_Ibarrier failed: " + mpi_error(rc));
    return 1;
  }
  return wait(req, timeout_s, what, err, n);
}

void abort_job(int code) { MPI_Abort(MPI_COMM_WORLD, code); }

void finalize() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!g_we_initialized || finalized) return;
  MPI_Comm_free(&g_world);
  MPI_Comm_free(&g_diag);
  MPI_Finalize();
}

const nw_mpi_plugin kPlugin = {NW_MPI_PLUGIN_ABI, init, all_reduce, broadcast, barrier, answer_pings,
                               silent_ranks, abort_job, finalize};

}  // namespace

extern "C" __attribute__((visibility("default"))) const nw_mpi_plugin* nw_mpi_plugin_get(void) { return &kPlugin; }
