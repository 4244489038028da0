// CUDA graphs of the compute stream's work (core/cuda_graph.h).
#include <string>

#include "core/cuda_graph.h"
#include "kernels/cuda_check.cuh"
#include "kernels/stream.cuh"

namespace nw::cuda {

void Graph::capture(const std::function<void()>& work) {
  reset();
  cudaStream_t s = detail::stream();
  // Thread-local mode: a call on this thread that cannot be captured (a synchronisation, cudaMalloc)
  // fails instead of silently running outside the graph; other threads' calls are not checked, but work
  // they issue on the compute stream meanwhile would be recorded too (core/cuda_graph.h).
  NW_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  std::string failure;
  try {
    work();
  } catch (const std::exception& e) {
    failure = e.what();
  }
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(s, &graph);
  cudaGetLastError();  // a failed capture leaves its error here: the stream is usable again
  if (failure.empty() && ended != cudaSuccess)
    failure = std::string("the capture was invalidated (") + cudaGetErrorString(ended) + ")";
  if (!failure.empty()) {
    if (graph) cudaGraphDestroy(graph);
    throw Error("CUDA graph capture failed: " + failure);
  }
  cudaGraphExec_t exec = nullptr;
  const cudaError_t made = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  NW_CUDA_CHECK(made);
  exec_ = exec;
}

void Graph::replay() const {
  NW_CHECK(exec_, "Graph::replay: nothing was captured");
  NW_CUDA_CHECK(cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec_), detail::stream()));
}

void Graph::reset() {
  if (exec_) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec_));
  exec_ = nullptr;
}

}  // namespace nw::cuda
