// Pattern "mmap-rand": touch `count` random `align`-aligned ranges of `block` bytes in a mapping.
#include "probe/pattern.h"

namespace cmio::probe {
namespace {

class MmapRandPattern final : public Pattern {
 public:
  const char* name() const override { return "mmap-rand"; }
  Access access() const override { return Access::kTouch; }
  std::vector<OpSpec> plan(const PatternParams& p) const override {
    return plan_random(p, p.block, p.align);
  }
};

const PatternRegistrar<MmapRandPattern> kRegistered;

}  // namespace
}  // namespace cmio::probe
