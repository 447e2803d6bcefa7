// Pattern "mmap-list": touch the pages of an explicit list of (offset, length), in order.
#include "probe/pattern.h"

namespace cmio::probe {
namespace {

class MmapListPattern final : public Pattern {
 public:
  const char* name() const override { return "mmap-list"; }
  Access access() const override { return Access::kTouch; }
  std::vector<OpSpec> plan(const PatternParams& p) const override {
    return plan_list(p);
  }
};

const PatternRegistrar<MmapListPattern> kRegistered;

}  // namespace
}  // namespace cmio::probe
