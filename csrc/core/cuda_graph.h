// A CUDA graph: the kernels, copies and cuBLAS calls one piece of host code issues on the compute
// stream (kernels/stream.cuh), recorded once and launched again as a whole. A training step issues
// thousands of small launches; replaying them as one graph removes the host's launch cost and gaps.
// Declared here, implemented in kernels/cuda_graph.cu (the CPU-only build's stub throws).
#pragma once
#include <functional>

namespace nw::cuda {

class Graph {
 public:
  Graph() = default;
  ~Graph() { reset(); }
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;

  // Records what work issues on the compute stream; the work itself does not run. Throws (holding no
  // graph, the stream usable again) when work does something a graph cannot hold, such as reading a
  // result to the host or allocating with cudaMalloc. The capture records the compute stream, not this
  // thread: no other thread may issue work on the device while it runs (the training loop issues all
  // its device work from one thread).
  void capture(const std::function<void()>& work);
  void replay() const;  // launches the recorded work on the compute stream; the host does not wait
  bool empty() const { return exec_ == nullptr; }
  void reset();  // never throws

 private:
  void* exec_ = nullptr;  // cudaGraphExec_t
};

}  // namespace nw::cuda
