// Pattern "mmap-seq": touch every page of a mapping in order, `block` bytes (whole pages) per operation.
#include "probe/pattern.h"

namespace cmio::probe {
namespace {

class MmapSeqPattern final : public Pattern {
 public:
  const char* name() const override { return "mmap-seq"; }
  Access access() const override { return Access::kTouch; }
  std::vector<OpSpec> plan(const PatternParams& p) const override {
    return plan_sequential(p.file_size, p.block, p.block);
  }
};

const PatternRegistrar<MmapSeqPattern> kRegistered;

}  // namespace
}  // namespace cmio::probe
