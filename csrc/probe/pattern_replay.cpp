// Pattern "replay": an explicit list of (offset, length), in order.
#include "probe/pattern.h"

namespace cmio::probe {
namespace {

class ReplayPattern final : public Pattern {
 public:
  const char* name() const override { return "replay"; }
  Access access() const override { return Access::kPread; }
  std::vector<OpSpec> plan(const PatternParams& p) const override {
    return plan_list(p);
  }
};

const PatternRegistrar<ReplayPattern> kRegistered;

}  // namespace
}  // namespace cmio::probe
