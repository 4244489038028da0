// The step workspace (core/step_workspace.h): one device block per GPU, handed out as a stack to the
// Scratch buffers of the thread that opened it. Requests that do not fit go to the pool and still count
// toward the step's peak; closing the workspace grows the block to that peak (stream-ordered free and
// allocation: no synchronisation), so the next step at the same shape is served entirely from the block.
#include <algorithm>
#include <atomic>
#include <vector>

#include "core/step_workspace.h"
#include "kernels/common.cuh"

namespace nw::cuda {

namespace {
constexpr size_t kAlign = 256;  // as cudaMalloc's: every kernel's vector loads stay aligned
constexpr int kMaxDevices = 64;

struct Workspace {
  std::atomic<bool> open{false};
  char* block = nullptr;
  size_t capacity = 0;
  size_t top = 0;     // bytes of the block handed out
  size_t demand = 0;  // bytes of scratch alive, in the block or not
  size_t peak = 0;    // the largest demand since the block was last sized
  struct Slot {
    size_t offset;
    bool released;
  };
  std::vector<Slot> slots;  // the block's live buffers, in the order they were handed out
};

Workspace& workspace_of(int device) {
  static Workspace spaces[kMaxDevices];
  return spaces[device];
}

thread_local Workspace* active = nullptr;
std::atomic<int64_t> pool_allocations{0};
std::atomic<int64_t> block_moves{0};

size_t aligned(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }
}  // namespace

bool open_step_workspace() {
  if (active) return false;
  int dev = 0;
  NW_CUDA_CHECK(cudaGetDevice(&dev));
  NW_CHECK(dev >= 0 && dev < kMaxDevices, "step workspace: device ", dev, " beyond ", kMaxDevices);
  Workspace& w = workspace_of(dev);
  if (w.open.exchange(true)) return false;  // another thread's step holds it
  w.demand = 0;
  active = &w;
  return true;
}

void close_step_workspace() {
  Workspace& w = *active;
  active = nullptr;
  // Every scratch buffer of the step is gone by now (they live inside one op call); the block grows for
  // the next step when this one needed more. Freed and reallocated in stream order: work still queued
  // on the old block runs before the memory is reused.
  if (w.slots.empty() && w.peak > w.capacity) {
    block_moves.fetch_add(1);
    if (w.block) cudaFreeAsync(w.block, detail::stream());
    w.block = nullptr;
    w.capacity = 0;
    detail::keep_pool_memory();
    void* p = nullptr;
    if (cudaMallocAsync(&p, w.peak, detail::stream()) == cudaSuccess) {
      w.block = static_cast<char*>(p);
      w.capacity = w.peak;
    } else {
      cudaGetLastError();  // out of memory for the block: later steps keep using the pool
    }
  }
  w.open.store(false);
}

int64_t scratch_pool_allocations() { return pool_allocations.load(); }
int64_t step_workspace_generation() { return block_moves.load(); }

namespace detail {

void* take_step_scratch(size_t nbytes, bool* counted) {
  Workspace* w = active;
  *counted = w != nullptr;
  if (!w) return nullptr;
  const size_t n = aligned(nbytes);
  w->demand += n;
  w->peak = std::max(w->peak, w->demand);
  if (w->top + n > w->capacity) return nullptr;
  w->slots.push_back({w->top, false});
  void* p = w->block + w->top;
  w->top += n;
  return p;
}

void give_back_step_scratch(void* p, size_t nbytes) {
  Workspace* w = active;
  if (!w) return;  // the workspace closed first: its block keeps the slot until it is sized again
  w->demand -= aligned(nbytes);
  if (!p) return;  // served by the pool
  const size_t offset = static_cast<size_t>(static_cast<char*>(p) - w->block);
  for (auto it = w->slots.rbegin(); it != w->slots.rend(); ++it)
    if (it->offset == offset) {
      it->released = true;
      break;
    }
  while (!w->slots.empty() && w->slots.back().released) {  // the top is free: the stack shrinks to it
    w->top = w->slots.back().offset;
    w->slots.pop_back();
  }
}

void count_pool_allocation() { pool_allocations.fetch_add(1); }

}  // namespace detail
}  // namespace nw::cuda
