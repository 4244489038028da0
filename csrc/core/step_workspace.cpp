#include "core/step_workspace.h"

namespace nw {

StepWorkspace::StepWorkspace(Device device) {
  if (device == Device::CUDA) opened_ = cuda::open_step_workspace();
}

StepWorkspace::~StepWorkspace() {
  if (opened_) cuda::close_step_workspace();
}

}  // namespace nw
