// The file catalog of an emulated CVMFS store (docs/store-format.md, schema cmio-1),
// loaded whole into memory at mount time: the tree is immutable for the mount's life.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

namespace simfs {

using Sha1 = std::array<unsigned char, 20>;

std::string to_hex(const Sha1& h);

struct Chunk {
  std::int64_t offset = 0;
  std::int64_t size = 0;
  Sha1 hash{};
};

enum : std::int64_t {
  kFlagDir = 1,
  kFlagFile = 4,
  kFlagLink = 8,
  kFlagChunked = 64,
  kFlagBundleTrigger = 1 << 20,  // ours: a `.cvmfsbundle-<name>` spec sits next to it
};

struct Entry {
  std::uint64_t ino = 0;
  std::uint64_t parent = 0;
  std::string name;
  std::string path;  // repository path, "" for the root, else "/a/b"
  std::int64_t size = 0;
  std::uint32_t mode = 0;
  std::int64_t mtime = 0;
  std::int64_t flags = 0;
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  bool has_hash = false;
  Sha1 hash{};
  std::string symlink;
  std::vector<Chunk> chunks;                    // chunked files only, ascending offsets
  std::map<std::string, std::uint64_t> children;  // directories only

  bool is_dir() const { return (flags & kFlagDir) != 0; }
  bool is_link() const { return (flags & kFlagLink) != 0; }
  bool is_regular() const { return (flags & kFlagFile) != 0; }
  bool is_chunked() const { return (flags & kFlagChunked) != 0 && !chunks.empty(); }
  bool is_bundle_trigger() const { return (flags & kFlagBundleTrigger) != 0 && is_regular(); }
  bool compressed() const { return ((flags >> 11) & 7) == 0; }
};

class Catalog {
 public:
  // Reads the SQLite file at `db_path`; throws std::runtime_error with one line.
  explicit Catalog(const std::string& db_path);

  const Entry* get(std::uint64_t ino) const {
    return (ino >= 1 && ino < entries_.size()) ? &entries_[ino] : nullptr;
  }
  // The entry of repository path `path` ("" the root, else "/a/b"), or nullptr.
  const Entry* find(const std::string& path) const {
    const auto it = by_path_.find(path);
    return it == by_path_.end() ? nullptr : &entries_[it->second];
  }
  std::size_t size() const { return entries_.size() - 1; }  // entries, root included
  std::int64_t total_bytes() const { return total_bytes_; }
  const std::map<std::string, std::string>& properties() const { return props_; }
  const std::vector<Entry>& entries() const { return entries_; }

 private:
  std::vector<Entry> entries_;  // index = inode number; [0] unused, [1] the root
  std::map<std::string, std::string> props_;
  std::unordered_map<std::string, std::uint64_t> by_path_;
  std::int64_t total_bytes_ = 0;
};

}  // namespace simfs
