// Pattern "seq": blocks of `block` bytes from offset 0 to the end, once each.
#include "probe/pattern.h"

namespace cmio::probe {
namespace {

class SeqPattern final : public Pattern {
 public:
  const char* name() const override { return "seq"; }
  Access access() const override { return Access::kPread; }
  std::vector<OpSpec> plan(const PatternParams& p) const override {
    return plan_sequential(p.file_size, p.block, p.block);
  }
};

const PatternRegistrar<SeqPattern> kRegistered;

}  // namespace
}  // namespace cmio::probe
