// Pattern "rand": `count` blocks at uniform random `align`-aligned offsets (splitmix64 seeded by `seed`).
#include "probe/pattern.h"

namespace cmio::probe {
namespace {

class RandPattern final : public Pattern {
 public:
  const char* name() const override { return "rand"; }
  Access access() const override { return Access::kPread; }
  std::vector<OpSpec> plan(const PatternParams& p) const override {
    return plan_random(p, p.block, p.align);
  }
};

const PatternRegistrar<RandPattern> kRegistered;

}  // namespace
}  // namespace cmio::probe
