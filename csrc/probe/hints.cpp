#include "probe/hints.h"

#include <fcntl.h>
#include <sys/mman.h>

#include <stdexcept>
#include <utility>

namespace cmio::probe {
namespace {

using Table = std::vector<std::pair<std::string, int>>;

const Table& fadvise_table() {
  static const Table t = {{"normal", POSIX_FADV_NORMAL},     {"sequential", POSIX_FADV_SEQUENTIAL},
                          {"random", POSIX_FADV_RANDOM},     {"willneed", POSIX_FADV_WILLNEED},
                          {"dontneed", POSIX_FADV_DONTNEED}, {"noreuse", POSIX_FADV_NOREUSE}};
  return t;
}

const Table& madvise_table() {
  static const Table t = {{"normal", MADV_NORMAL},
                          {"sequential", MADV_SEQUENTIAL},
                          {"random", MADV_RANDOM},
                          {"willneed", MADV_WILLNEED},
                          {"hugepage", MADV_HUGEPAGE}};
  return t;
}

int lookup(const Table& t, const std::string& name, const char* kind) {
  std::string valid;
  for (const auto& kv : t) {
    if (kv.first == name) return kv.second;
    valid += (valid.empty() ? "" : ", ") + kv.first;
  }
  throw std::invalid_argument(std::string("unknown ") + kind + " hint '" + name + "' (valid: " + valid +
                              ")");
}

std::vector<std::string> names(const Table& t) {
  std::vector<std::string> out;
  for (const auto& kv : t) out.push_back(kv.first);
  return out;
}

}  // namespace

int fadvise_advice(const std::string& name) { return lookup(fadvise_table(), name, "fadvise"); }
int madvise_advice(const std::string& name) { return lookup(madvise_table(), name, "madvise"); }
std::vector<std::string> fadvise_names() { return names(fadvise_table()); }
std::vector<std::string> madvise_names() { return names(madvise_table()); }

}  // namespace cmio::probe
