// Pattern "stride": `block` bytes every `stride` bytes from offset 0.
#include "probe/pattern.h"

namespace cmio::probe {
namespace {

class StridePattern final : public Pattern {
 public:
  const char* name() const override { return "stride"; }
  Access access() const override { return Access::kPread; }
  std::vector<OpSpec> plan(const PatternParams& p) const override {
    return plan_sequential(p.file_size, p.block, p.stride);
  }
};

const PatternRegistrar<StridePattern> kRegistered;

}  // namespace
}  // namespace cmio::probe
