// How many pages of a file are in the page cache: cachestat(2) where the kernel
// has it (6.5+), else mincore(2) on a read-only mapping.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <string>
#include <vector>

namespace cmio::probe {

struct Residency {
  bool trusted = false;          // false: the kernel may hide page-cache state from us
  std::int64_t pages = -1;       // resident pages (-1 when not trusted)
  std::int64_t dirty = -1;       // dirty or under writeback (cachestat only, else -1)
  std::int64_t total_pages = 0;  // pages the file spans
  std::string method;            // "cachestat" or "mincore"
};

// mincore and cachestat only report the page cache of files we could write
// (or own, or as root); for others the numbers are not the real state.
bool residency_trusted(const struct stat& st, const std::string& path);

// Per page of the file: resident or not (mincore on a read-only mapping).
std::vector<bool> resident_pages(int fd, std::int64_t file_size, std::int64_t page_size,
                                 const std::string& what);

// `use_mincore` skips cachestat (to compare the two methods, or on a kernel without it).
Residency measure_residency(int fd, std::int64_t file_size, std::int64_t page_size, bool trusted,
                            const std::string& what, bool use_mincore = false);

}  // namespace cmio::probe
