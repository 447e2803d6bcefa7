#include <algorithm>
#include <map>
#include <stdexcept>
#include <string>

#include "probe/pattern.h"

namespace cmio::probe {
namespace {

std::map<std::string, std::unique_ptr<Pattern>>& registry() {
  static std::map<std::string, std::unique_ptr<Pattern>> r;
  return r;
}

void need_positive(std::int64_t v, const char* what) {
  if (v <= 0) throw std::invalid_argument(std::string(what) + " must be > 0");
}

}  // namespace

void register_pattern(std::unique_ptr<Pattern> p) {
  std::string n = p->name();
  registry()[n] = std::move(p);
}

const Pattern* find_pattern(const std::string& name) {
  auto it = registry().find(name);
  return it == registry().end() ? nullptr : it->second.get();
}

std::vector<std::string> pattern_names() {
  std::vector<std::string> out;
  for (const auto& kv : registry()) out.push_back(kv.first);
  return out;
}

std::vector<OpSpec> plan_sequential(std::int64_t file_size, std::int64_t block, std::int64_t stride) {
  need_positive(block, "block size");
  need_positive(stride, "stride");
  std::vector<OpSpec> ops;
  ops.reserve(static_cast<std::size_t>(file_size / stride + 1));
  // The last operation is clipped at end of file, so a short read means the file changed.
  for (std::int64_t off = 0; off < file_size; off += stride)
    ops.push_back({off, std::min(block, file_size - off)});
  return ops;
}

std::vector<OpSpec> plan_random(const PatternParams& p, std::int64_t block, std::int64_t align) {
  need_positive(block, "block size");
  need_positive(align, "alignment");
  need_positive(p.count, "count");
  if (block > p.file_size)
    throw std::invalid_argument("block size " + std::to_string(block) + " is larger than the file (" +
                                std::to_string(p.file_size) + " bytes)");
  // Offsets are multiples of `align` with the whole block inside the file.
  const auto slots = static_cast<std::uint64_t>((p.file_size - block) / align + 1);
  SplitMix64 rng(p.seed);
  std::vector<OpSpec> ops(static_cast<std::size_t>(p.count));
  for (auto& op : ops) op = {static_cast<std::int64_t>(rng.below(slots)) * align, block};
  return ops;
}

std::vector<OpSpec> plan_list(const PatternParams& p) {
  if (p.list.empty()) throw std::invalid_argument("the operation list is empty");
  for (const auto& op : p.list) {
    if (op.offset < 0 || op.length <= 0 || op.offset > p.file_size - op.length)
      throw std::invalid_argument("list entry (" + std::to_string(op.offset) + ", " +
                                  std::to_string(op.length) + ") is not inside the file (" +
                                  std::to_string(p.file_size) + " bytes)");
  }
  return p.list;
}

}  // namespace cmio::probe
