// Pattern "reverse": the blocks of seq, last block first.
#include <algorithm>

#include "probe/pattern.h"

namespace cmio::probe {
namespace {

class ReversePattern final : public Pattern {
 public:
  const char* name() const override { return "reverse"; }
  Access access() const override { return Access::kPread; }
  std::vector<OpSpec> plan(const PatternParams& p) const override {
    auto ops = plan_sequential(p.file_size, p.block, p.block);
    std::reverse(ops.begin(), ops.end());
    return ops;
  }
};

const PatternRegistrar<ReversePattern> kRegistered;

}  // namespace
}  // namespace cmio::probe
