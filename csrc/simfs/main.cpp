// cmio-simfs: a read-only FUSE client for an emulated CVMFS store that behaves like the
// real cvmfs2 client (cvmfs-facts.md §2-3): an unchunked file is downloaded whole at
// open(), a chunked file chunk by chunk on read (no prefetch unless --prefetch N; file
// bundles only with --prefetch-filebundles, off by default as CVMFS_PREFETCH_FILEBUNDLES),
// every object verified against its SHA-1, decompressed objects cached on local disk.
//
//   cmio-simfs URL MOUNTPOINT --cache DIR [--proxy URL] [--parallel N] [--prefetch N]
//              [--timeout S] [--timeout-direct S] [--retries N] [--log FILE]
//              [--client-profile cvmfs-2.12|fast] [--cost-per-object-us X]
//              [--cost-per-mib-us X] [--ready-fd FD]
//              [--prefetch-filebundles] [--bundle-pool-size N]
//
// Runs in the foreground until unmounted or SIGINT/SIGTERM; SIGUSR1 empties the cache
// (except the pinned catalog) and drops the kernel page cache of every file; SIGUSR2
// writes the event log (--log) as it stands, while mounted (the final one at unmount
// holds everything, the flushed events included).  The cache
// directory is locked (flock on <cache>/lock) for the client's life, so a second client
// on the same cache is refused, as cvmfs2 refuses a second instance on its workspace.
#define FUSE_USE_VERSION 314

#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <curl/curl.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "bundle.h"
#include "catalog.h"
#include "common/unique_fd.h"
#include "eventlog.h"
#include "fetcher.h"
#include "profile.h"
#include "xattrs.h"

namespace simfs {
namespace {

constexpr double kKernelCacheTimeout = 3600.0;  // the tree never changes under a mount

struct Options {
  std::string url;
  std::string mountpoint;
  std::string cache;
  std::string proxy;
  std::string log;
  int parallel = 16;
  int prefetch = 0;
  double timeout_s = 5.0;          // through a proxy (CVMFS_TIMEOUT)
  double timeout_direct_s = 10.0;  // without one (CVMFS_TIMEOUT_DIRECT)
  int retries = 1;
  int ready_fd = -1;
  bool splice = true;
  bool prefetch_filebundles = false;  // CVMFS_PREFETCH_FILEBUNDLES (default off)
  int bundle_pool_size = 8;           // CVMFS_BUNDLE_POOL_SIZE (upstream default 8)
  ClientProfile profile;
  double cost_per_object_us = -1;  // < 0: the profile's value
  double cost_per_mib_us = -1;
};

// An open cache file; shared so that a reply can splice from it after the handle has
// moved on to another chunk.
struct Handle {
  const Entry* entry = nullptr;
  int fd = -1;                       // unchunked: the cached object
  std::mutex mu;                     // chunked: one chunk in flight per handle
  std::size_t chunk = SIZE_MAX;      // chunk whose cache file is open in chunk_fd
  std::shared_ptr<cmio::UniqueFd> chunk_fd;
  ~Handle() {
    if (fd >= 0) ::close(fd);
  }
};

struct Fs {
  Options opt;
  Counters counters;
  std::unique_ptr<EventLog> log;
  std::unique_ptr<Fetcher> fetcher;
  std::unique_ptr<Catalog> catalog;
  std::unique_ptr<BundleMgr> bundles;  // --prefetch-filebundles only
  std::string catalog_cache_path;
  XattrEnv xenv;
  LogBuffer logbuf;
  CleanupTimes cleanups;
  fuse_session* se = nullptr;
  bool copy_replies = false;  // pread + fuse_reply_buf instead of splice
  std::atomic<bool> stopping{false};  // the control thread's SIGUSR2 then means "return"
};

Fs* g_fs = nullptr;

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "cmio-simfs: %s\n", msg.c_str());
  std::exit(2);
}

std::int32_t tid() { return static_cast<std::int32_t>(::gettid()); }

cmio::Event fuse_event(cmio::Op op, const Entry* e, fuse_req_t req) {
  cmio::Event ev = cmio::blank_event(cmio::Source::kFuse, op);
  ev.t_start_ns = cmio::monotonic_ns();
  const fuse_ctx* ctx = fuse_req_ctx(req);
  ev.pid = ctx ? ctx->pid : 0;
  ev.tid = tid();
  if (e != nullptr && g_fs->log->enabled()) ev.file_id = g_fs->log->file_id(e->path, e->size);
  return ev;
}

void finish(cmio::Event* ev, std::int64_t result, int err) {
  ev->duration_ns = cmio::monotonic_ns() - ev->t_start_ns;
  ev->result = result;
  ev->err = err;
  g_fs->log->add(*ev);
}

void fill_stat(const Entry& e, struct stat* st) {
  std::memset(st, 0, sizeof *st);
  st->st_ino = e.ino;
  st->st_mode = e.mode;
  st->st_nlink = e.is_dir() ? 2 : 1;
  st->st_uid = e.uid;
  st->st_gid = e.gid;
  st->st_size = e.is_link() ? static_cast<off_t>(e.symlink.size()) : e.size;
  st->st_blksize = 4096;
  st->st_blocks = (e.size + 511) / 512;
  st->st_mtim.tv_sec = e.mtime;
  st->st_ctim.tv_sec = e.mtime;
  st->st_atim.tv_sec = e.mtime;
}

ObjectRef whole_object(const Entry& e) {
  ObjectRef o;
  o.hash = e.hash;
  o.size = e.size;
  o.compressed = e.compressed();
  return o;
}

ObjectRef chunk_object(const Entry& e, std::size_t i) {
  ObjectRef o;
  o.hash = e.chunks[i].hash;
  o.suffix = 'P';
  o.size = e.chunks[i].size;
  o.compressed = e.compressed();
  o.file_offset = e.chunks[i].offset;
  return o;
}

void op_init(void*, fuse_conn_info* conn) {
  if (g_fs->copy_replies) return;
  // Zero-copy replies from the cache files when the kernel can splice; max_read and
  // max_readahead stay at the kernel's defaults, as with the real client.
  if ((conn->capable & FUSE_CAP_SPLICE_WRITE) != 0) conn->want |= FUSE_CAP_SPLICE_WRITE;
  if ((conn->capable & FUSE_CAP_SPLICE_MOVE) != 0) conn->want |= FUSE_CAP_SPLICE_MOVE;
}

// Replies with `len` bytes of cache file `fd` at `pos`: copied out with pread as cvmfs2
// does (cvmfs-2.12 profile, --no-splice), or spliced when the kernel allows (fast).
int reply_from_fd(fuse_req_t req, int fd, std::int64_t pos, std::size_t len) {
  if (g_fs->copy_replies) {
    thread_local std::vector<char> buf;
    if (buf.size() < len) buf.resize(len);
    std::size_t got = 0;
    while (got < len) {
      const ssize_t n = ::pread(fd, buf.data() + got, len - got, static_cast<off_t>(pos) + static_cast<off_t>(got));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      got += static_cast<std::size_t>(n);
    }
    return fuse_reply_buf(req, buf.data(), got);
  }
  // FUSE_BUFVEC_INIT is a compound literal (not ISO C++): the same fields set one by one.
  fuse_bufvec bv{};
  bv.count = 1;
  bv.buf[0].size = len;
  bv.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
  bv.buf[0].fd = fd;
  bv.buf[0].pos = pos;
  return fuse_reply_data(req, &bv, FUSE_BUF_SPLICE_MOVE);
}

void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  g_fs->counters.n_fs_lookup.fetch_add(1);
  const Entry* dir = g_fs->catalog->get(parent);
  if (dir == nullptr || !dir->is_dir()) {
    fuse_reply_err(req, ENOTDIR);
    return;
  }
  const auto it = dir->children.find(name);
  if (it == dir->children.end()) {
    fuse_entry_param ep{};
    ep.ino = 0;  // negative entry, cached like the real client's
    ep.entry_timeout = kKernelCacheTimeout;
    fuse_reply_entry(req, &ep);
    return;
  }
  const Entry& e = *g_fs->catalog->get(it->second);
  fuse_entry_param ep{};
  ep.ino = e.ino;
  ep.generation = 1;
  ep.attr_timeout = kKernelCacheTimeout;
  ep.entry_timeout = kKernelCacheTimeout;
  fill_stat(e, &ep.attr);
  fuse_reply_entry(req, &ep);
}

void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  const Entry* e = g_fs->catalog->get(ino);
  if (e == nullptr) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  struct stat st {};
  fill_stat(*e, &st);
  fuse_reply_attr(req, &st, kKernelCacheTimeout);
}

void op_readlink(fuse_req_t req, fuse_ino_t ino) {
  const Entry* e = g_fs->catalog->get(ino);
  if (e == nullptr || !e->is_link()) {
    fuse_reply_err(req, EINVAL);
    return;
  }
  fuse_reply_readlink(req, e->symlink.c_str());
}

void op_opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  const Entry* e = g_fs->catalog->get(ino);
  if (e == nullptr) {
    fuse_reply_err(req, ENOENT);
  } else if (!e->is_dir()) {
    fuse_reply_err(req, ENOTDIR);
  } else {
    fi->cache_readdir = 1;
    fi->keep_cache = 1;
    g_fs->counters.n_fs_dir_open.fetch_add(1);
    if (fuse_reply_open(req, fi) == 0) g_fs->counters.no_open_dirs.fetch_add(1);
  }
}

void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  const Entry* e = g_fs->catalog->get(ino);
  if (e == nullptr || !e->is_dir()) {
    fuse_reply_err(req, ENOTDIR);
    return;
  }
  std::vector<std::pair<std::string, const Entry*>> items;
  items.reserve(e->children.size() + 2);
  items.emplace_back(".", e);
  items.emplace_back("..", g_fs->catalog->get(e->parent));
  for (const auto& [name, child] : e->children) items.emplace_back(name, g_fs->catalog->get(child));
  std::vector<char> buf(size);
  std::size_t used = 0;
  for (std::size_t i = static_cast<std::size_t>(std::max<off_t>(off, 0)); i < items.size(); ++i) {
    struct stat st {};
    st.st_ino = items[i].second->ino;
    st.st_mode = items[i].second->mode;
    const std::size_t need = fuse_add_direntry(req, buf.data() + used, size - used,
                                               items[i].first.c_str(), &st,
                                               static_cast<off_t>(i + 1));
    if (need > size - used) break;
    used += need;
  }
  fuse_reply_buf(req, buf.data(), used);
}

void op_releasedir(fuse_req_t req, fuse_ino_t, fuse_file_info*) {
  g_fs->counters.no_open_dirs.fetch_sub(1);
  fuse_reply_err(req, 0);
}

void note_io_error(const std::string& what, int rc) {
  g_fs->counters.n_io_error.fetch_add(1);
  g_fs->counters.last_io_error_s.store(static_cast<std::int64_t>(std::time(nullptr)));
  g_fs->logbuf.add("failed to fetch " + what + " (error " + std::to_string(-rc) + " [" +
                   std::strerror(-rc) + "])");
}

void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  const Entry* e = g_fs->catalog->get(ino);
  cmio::Event ev = fuse_event(cmio::Op::kFuseOpen, e, req);
  if (e == nullptr) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  if ((fi->flags & O_ACCMODE) != O_RDONLY) {
    finish(&ev, -EROFS, EROFS);
    fuse_reply_err(req, EROFS);
    return;
  }
  if (!e->is_regular()) {
    finish(&ev, -EISDIR, EISDIR);
    fuse_reply_err(req, EISDIR);
    return;
  }
  g_fs->counters.n_fs_open.fetch_add(1);
  // Queued before the trigger's own download, so the dependencies come in parallel with
  // it; scheduling never blocks (a full queue drops the request, as upstream).
  if (g_fs->bundles && e->is_bundle_trigger()) g_fs->bundles->schedule_trigger(e->path);
  auto h = std::make_unique<Handle>();
  h->entry = e;
  if (!e->is_chunked()) {
    // The real client downloads an unchunked file whole before open() returns.
    const int rc = g_fs->fetcher->open_object(whole_object(*e), e->path);
    if (rc >= 0) h->fd = rc;
    if (rc < 0) {
      note_io_error(e->path, rc);
      finish(&ev, -EIO, EIO);
      fuse_reply_err(req, EIO);
      return;
    }
  }
  ev.offset = 0;
  ev.length = e->size;
  finish(&ev, 0, 0);
  fi->keep_cache = 1;
  fi->fh = reinterpret_cast<std::uint64_t>(h.get());
  // If the reply fails (the opener was interrupted) no release will come: keep ownership.
  if (fuse_reply_open(req, fi) == 0) {
    static_cast<void>(h.release());
    g_fs->counters.no_open_files.fetch_add(1);
  }
}

// Makes sure chunk `idx` of a chunked file is open in h->chunk_fd (h->mu held); 0 or -errno.
int open_chunk(Handle* h, std::size_t idx) {
  if (idx == h->chunk) return 0;
  const Entry& e = *h->entry;
  h->chunk_fd.reset();
  h->chunk = SIZE_MAX;
  const ObjectRef obj = chunk_object(e, idx);
  const bool hit = g_fs->opt.prefetch > 0 && g_fs->fetcher->cached(obj);
  const int fd = g_fs->fetcher->open_object(obj, "Part of " + e.path);
  if (fd < 0) return fd;
  h->chunk_fd = std::make_shared<cmio::UniqueFd>(fd);
  h->chunk = idx;
  if (!hit && g_fs->opt.prefetch > 0) {
    std::vector<ObjectRef> next;
    const std::size_t last =
        std::min(e.chunks.size(), idx + 1 + static_cast<std::size_t>(g_fs->opt.prefetch));
    for (std::size_t j = idx + 1; j < last; ++j) next.push_back(chunk_object(e, j));
    if (!next.empty()) g_fs->fetcher->prefetch(next);
  }
  return 0;
}

std::size_t chunk_index(const Entry& e, std::int64_t off) {
  const auto it = std::upper_bound(e.chunks.begin(), e.chunks.end(), off,
                                   [](std::int64_t o, const Chunk& c) { return o < c.offset; });
  return static_cast<std::size_t>(it - e.chunks.begin()) - 1;
}

void op_read(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi) {
  auto* h = reinterpret_cast<Handle*>(fi->fh);
  const Entry& e = *h->entry;
  g_fs->counters.n_fs_read.fetch_add(1);
  cmio::Event ev = fuse_event(cmio::Op::kFuseRead, &e, req);
  ev.offset = off;
  ev.length = static_cast<std::int64_t>(size);
  const std::size_t want =
      off >= e.size ? 0 : std::min<std::size_t>(size, static_cast<std::size_t>(e.size - off));
  auto fail = [&](int rc) {
    note_io_error("part of " + e.path, rc);
    finish(&ev, rc, -rc);
    fuse_reply_err(req, EIO);
  };
  if (want == 0) {
    finish(&ev, 0, 0);
    fuse_reply_buf(req, nullptr, 0);
    return;
  }
  if (h->fd >= 0) {
    finish(&ev, static_cast<std::int64_t>(want), 0);
    reply_from_fd(req, h->fd, off, want);
    return;
  }
  // Chunked: one chunk in flight per handle, as the real client.
  std::unique_lock<std::mutex> lock(h->mu);
  const std::size_t idx = chunk_index(e, off);
  const Chunk& c = e.chunks[idx];
  if (off + static_cast<std::int64_t>(want) <= c.offset + c.size) {
    const int rc = open_chunk(h, idx);
    if (rc != 0) return fail(rc);
    const std::shared_ptr<cmio::UniqueFd> cf = h->chunk_fd;
    lock.unlock();
    finish(&ev, static_cast<std::int64_t>(want), 0);
    reply_from_fd(req, cf->get(), off - c.offset, want);
    return;
  }
  // The read crosses a chunk boundary: continue into the next chunk(s).
  thread_local std::vector<char> buf;
  if (buf.size() < want) buf.resize(want);
  std::size_t done = 0;
  std::int64_t pos = off;
  while (done < want) {
    const std::size_t i = chunk_index(e, pos);
    const int rc = open_chunk(h, i);
    if (rc != 0) return fail(rc);
    const Chunk& ci = e.chunks[i];
    const std::int64_t in_chunk = pos - ci.offset;
    const std::size_t part =
        std::min<std::size_t>(want - done, static_cast<std::size_t>(ci.size - in_chunk));
    const ssize_t n = ::pread(h->chunk_fd->get(), buf.data() + done, part, in_chunk);
    if (n < 0) return fail(-errno);
    if (static_cast<std::size_t>(n) != part) return fail(-EIO);  // cache file too short
    done += part;
    pos += static_cast<std::int64_t>(part);
  }
  lock.unlock();
  finish(&ev, static_cast<std::int64_t>(done), 0);
  fuse_reply_buf(req, buf.data(), done);
}

void op_release(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  std::unique_ptr<Handle> h(reinterpret_cast<Handle*>(fi->fh));
  cmio::Event ev = fuse_event(cmio::Op::kFuseRelease, h->entry, req);
  h.reset();
  g_fs->counters.no_open_files.fetch_sub(1);
  finish(&ev, 0, 0);
  fuse_reply_err(req, 0);
}

void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  const Entry* e = g_fs->catalog->get(ino);
  if (e == nullptr) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  std::string value;
  if (!get_xattr(g_fs->xenv, *e, name, &value)) {
    fuse_reply_err(req, ENODATA);
  } else if (size == 0) {
    fuse_reply_xattr(req, value.size());
  } else if (size < value.size()) {
    fuse_reply_err(req, ERANGE);
  } else {
    fuse_reply_buf(req, value.data(), value.size());
  }
}

void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  const Entry* e = g_fs->catalog->get(ino);
  if (e == nullptr) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  const std::string names = list_xattrs(*e);
  if (size == 0) {
    fuse_reply_xattr(req, names.size());
  } else if (size < names.size()) {
    fuse_reply_err(req, ERANGE);
  } else {
    fuse_reply_buf(req, names.data(), names.size());
  }
}

void op_statfs(fuse_req_t req, fuse_ino_t) {
  struct statvfs sv {};
  sv.f_bsize = 4096;
  sv.f_frsize = 4096;
  sv.f_blocks = static_cast<fsblkcnt_t>((g_fs->catalog->total_bytes() + 4095) / 4096);
  sv.f_files = g_fs->catalog->size();
  sv.f_namemax = 255;
  fuse_reply_statfs(req, &sv);
}

std::string json_str(const std::string& s) {
  std::string o = "\"";
  for (const char ch : s) {
    const auto u = static_cast<unsigned char>(ch);
    if (ch == '"' || ch == '\\') {
      o += '\\';
      o += ch;
    } else if (u < 0x20) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", u);
      o += b;
    } else {
      o += ch;
    }
  }
  return o + "\"";
}

long parse_long(const std::string& flag, const char* v, long lo, long hi) {
  char* end = nullptr;
  errno = 0;
  const long x = std::strtol(v, &end, 10);
  if (errno != 0 || end == v || *end != '\0' || x < lo || x > hi) {
    die(flag + " wants an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) +
        "], got '" + v + "'");
  }
  return x;
}

Options parse_args(int argc, char** argv) {
  Options o;
  client_profile("cvmfs-2.12", &o.profile);
  std::vector<std::string> pos;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto val = [&]() -> const char* {
      if (i + 1 >= argc) die(a + " needs a value");
      return argv[++i];
    };
    if (a == "--cache") {
      o.cache = val();
    } else if (a == "--proxy") {
      o.proxy = val();
    } else if (a == "--log") {
      o.log = val();
    } else if (a == "--parallel") {
      o.parallel = static_cast<int>(parse_long(a, val(), 1, 1024));
    } else if (a == "--prefetch") {
      o.prefetch = static_cast<int>(parse_long(a, val(), 0, 1024));
    } else if (a == "--retries") {
      o.retries = static_cast<int>(parse_long(a, val(), 0, 100));
    } else if (a == "--ready-fd") {
      o.ready_fd = static_cast<int>(parse_long(a, val(), 0, 1 << 20));
    } else if (a == "--prefetch-filebundles") {
      o.prefetch_filebundles = true;
    } else if (a == "--bundle-pool-size") {
      o.bundle_pool_size = static_cast<int>(parse_long(a, val(), 1, 256));
    } else if (a == "--no-splice") {
      o.splice = false;
    } else if (a == "--timeout" || a == "--timeout-direct") {
      const char* v = val();
      char* end = nullptr;
      const double t = std::strtod(v, &end);
      if (end == v || *end != '\0' || !(t > 0.0) || t > 3600.0) {
        die(a + " wants seconds in (0, 3600], got '" + v + "'");
      }
      (a == "--timeout" ? o.timeout_s : o.timeout_direct_s) = t;
    } else if (a == "--client-profile") {
      const char* v = val();
      if (!client_profile(v, &o.profile)) {
        die(std::string("--client-profile: '") + v + "' is not one of " + client_profile_names());
      }
    } else if (a == "--cost-per-object-us" || a == "--cost-per-mib-us") {
      const char* v = val();
      char* end = nullptr;
      const double x = std::strtod(v, &end);
      if (end == v || *end != '\0' || !(x >= 0.0) || x > 1e7) {
        die(a + " wants microseconds in [0, 1e7], got '" + v + "'");
      }
      (a == "--cost-per-object-us" ? o.cost_per_object_us : o.cost_per_mib_us) = x;
    } else if (!a.empty() && a[0] == '-') {
      die("unknown option " + a);
    } else {
      pos.push_back(a);
    }
  }
  if (pos.size() != 2) die("usage: cmio-simfs URL MOUNTPOINT --cache DIR [options]");
  o.url = pos[0];
  while (!o.url.empty() && o.url.back() == '/') o.url.pop_back();
  o.mountpoint = pos[1];
  if (o.cache.empty()) die("--cache DIR is required");
  if (o.cost_per_object_us >= 0) {
    o.profile.cost_per_object_ns = static_cast<std::int64_t>(o.cost_per_object_us * 1000.0);
  }
  if (o.cost_per_mib_us >= 0) {
    o.profile.cost_per_mib_ns = static_cast<std::int64_t>(o.cost_per_mib_us * 1000.0);
  }
  return o;
}

void make_dir(const std::string& p) {
  if (::mkdir(p.c_str(), 0755) != 0 && errno != EEXIST) {
    die(p + ": cannot create directory: " + std::strerror(errno));
  }
}

bool hex40(const std::string& s) {
  return s.size() == 40 && s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

Sha1 from_hex(const std::string& s) {
  Sha1 h{};
  for (std::size_t i = 0; i < 20; ++i) {
    h[i] = static_cast<unsigned char>(std::stoi(s.substr(2 * i, 2), nullptr, 16));
  }
  return h;
}

// Fetches and checks the manifest, then the root catalog; fills g_fs or dies.
void load_repository(Fs* fs) {
  std::string manifest;
  std::string why;
  if (!fs->fetcher->get_text(".cvmfspublished", &manifest, &why)) die(why);
  const std::string name = fs->opt.url + "/.cvmfspublished";
  const std::size_t sep = manifest.find("\n--\n");
  if (sep == std::string::npos) die(name + ": no '--' signature line");
  {
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int dl = 0;
    std::string sig = manifest.substr(sep + 4);
    while (!sig.empty() && (sig.back() == '\n' || sig.back() == '\r')) sig.pop_back();
    if (EVP_Digest(manifest.data(), sep + 1, d, &dl, EVP_sha1(), nullptr) != 1 || dl != 20) {
      die("SHA-1 unavailable");
    }
    Sha1 got{};
    std::memcpy(got.data(), d, 20);
    if (!hex40(sig) || to_hex(got) != sig) die(name + ": manifest checksum does not match");
  }
  std::string catalog_hex;
  std::int64_t catalog_stored = -1;  // the catalog's stored size: bounds its download
  std::size_t pos = 0;
  while (pos < sep) {
    const std::size_t nl = manifest.find('\n', pos);
    const std::string line = manifest.substr(pos, nl - pos);
    pos = nl + 1;
    if (line.empty()) continue;
    if (line[0] == 'C') catalog_hex = line.substr(1);
    if (line[0] == 'S') fs->xenv.revision = line.substr(1);
    if (line[0] == 'N') fs->xenv.fqrn = line.substr(1);
    if (line[0] == 'D') fs->xenv.ttl_s = std::atoll(line.c_str() + 1);
    if (line[0] == 'B') catalog_stored = std::atoll(line.c_str() + 1);
  }
  if (!hex40(catalog_hex)) die(name + ": no valid C<catalog hash> line");
  ObjectRef cat;
  cat.hash = from_hex(catalog_hex);
  cat.suffix = 'C';
  cat.compressed = true;
  cat.stored_size = catalog_stored > 0 ? catalog_stored : -1;
  std::string path;
  const int rc = fs->fetcher->fetch(cat, &path);
  if (rc != 0) die(fs->opt.url + "/" + cat.name() + ": catalog download failed: " + std::strerror(-rc));
  fs->catalog_cache_path = path;
  fs->xenv.root_hash = catalog_hex;
  fs->xenv.loaded_s = static_cast<std::int64_t>(std::time(nullptr));
  try {
    fs->catalog = std::make_unique<Catalog>(path);
  } catch (const std::exception& ex) {
    die(ex.what());
  }
}

// The event log's metadata: where it came from and the counters at the time of writing.
std::string log_meta(Fs* fs, bool final) {
  std::string counters = "{";
  const std::string text = fs->counters.render();
  std::size_t p = 0;
  bool first = true;
  while (p < text.size()) {
    const std::size_t nl = text.find('\n', p);
    const std::string line = text.substr(p, nl - p);
    p = nl + 1;
    const std::size_t a = line.find('|');
    const std::size_t b = line.find('|', a + 1);
    counters += (first ? "" : ",") + json_str(line.substr(0, a)) + ":" + line.substr(a + 1, b - a - 1);
    first = false;
  }
  counters += "}";
  return "{\"clock\":\"CLOCK_MONOTONIC\",\"source\":\"cmio-simfs\",\"pid\":" +
         std::to_string(::getpid()) + ",\"url\":" + json_str(fs->opt.url) +
         ",\"mountpoint\":" + json_str(fs->opt.mountpoint) + ",\"cache\":" + json_str(fs->opt.cache) +
         ",\"client_profile\":" + json_str(fs->opt.profile.name) +
         ",\"cost_per_object_ns\":" + std::to_string(fs->opt.profile.cost_per_object_ns) +
         ",\"cost_per_mib_ns\":" + std::to_string(fs->opt.profile.cost_per_mib_ns) +
         ",\"final\":" + (final ? "true" : "false") + ",\"counters\":" + counters + "}";
}

// SIGUSR1: empty the cache and drop the page cache of every file (cvmfs_talk cleanup 0
// plus a page-cache drop, which the real client cannot do for other processes).
// SIGUSR2: write the event log so far (a reader need not unmount to see it); sent by the
// main thread after the loop has ended, it stops this thread instead.
void control_thread(Fs* fs, sigset_t set) {
  while (true) {
    int sig = 0;
    if (sigwait(&set, &sig) != 0) continue;
    if (sig == SIGUSR2) {
      if (fs->stopping.load()) return;
      if (fs->opt.log.empty()) continue;
      try {
        fs->log->write(fs->opt.log, log_meta(fs, false));
      } catch (const std::exception& ex) {
        std::fprintf(stderr, "cmio-simfs: %s\n", ex.what());
      }
      continue;
    }
    if (sig != SIGUSR1) return;
    fs->fetcher->cleanup(fs->catalog_cache_path);
    fs->cleanups.add(static_cast<std::int64_t>(std::time(nullptr)));
    for (const Entry& e : fs->catalog->entries()) {
      if (e.ino != 0 && e.is_regular()) {
        fuse_lowlevel_notify_inval_inode(fs->se, e.ino, 0, 0);
      }
    }
    fs->counters.n_cleanups.fetch_add(1);
  }
}

int run(int argc, char** argv) {
  Fs fs;
  g_fs = &fs;
  fs.opt = parse_args(argc, argv);
  make_dir(fs.opt.cache);
  make_dir(fs.opt.cache + "/txn");
  // One client per cache directory, as cvmfs2 locks its workspace: the lock is held for
  // the client's life (released by the kernel however the client ends).
  const std::string lock_path = fs.opt.cache + "/lock";
  cmio::UniqueFd lock_fd(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  if (!lock_fd.valid()) die(lock_path + ": " + std::strerror(errno));
  if (::flock(lock_fd.get(), LOCK_EX | LOCK_NB) != 0) {
    char buf[32] = {0};
    const ssize_t n = ::pread(lock_fd.get(), buf, sizeof buf - 1, 0);
    std::string holder = n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "?";
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    die(fs.opt.cache + ": cache directory is in use by another cmio-simfs (pid " + holder + ")");
  }
  {
    const std::string me = std::to_string(::getpid()) + "\n";
    if (::ftruncate(lock_fd.get(), 0) != 0 ||
        ::pwrite(lock_fd.get(), me.data(), me.size(), 0) != static_cast<ssize_t>(me.size())) {
      die(lock_path + ": cannot record the client's pid: " + std::strerror(errno));
    }
  }
  if (fs.opt.profile.quota_db) {
    // cvmfs2 creates the whole skeleton up front (MakeCacheDirectories): 00..ff and
    // quarantaine, so a commit never needs a mkdir.
    static const char kDigits[] = "0123456789abcdef";
    for (int a = 0; a < 16; ++a) {
      for (int b = 0; b < 16; ++b) make_dir(fs.opt.cache + "/" + kDigits[a] + kDigits[b]);
    }
    make_dir(fs.opt.cache + "/quarantaine");
  }
  {
    const std::string marker = fs.opt.cache + "/.cmio-simfs-cache";
    const int fd = ::open(marker.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) die(marker + ": " + std::strerror(errno));
    ::close(fd);
  }
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) die("libcurl initialisation failed");

  // Block the control signals before any thread starts so that only sigwait sees them.
  sigset_t ctl;
  sigemptyset(&ctl);
  sigaddset(&ctl, SIGUSR1);
  sigaddset(&ctl, SIGUSR2);
  pthread_sigmask(SIG_BLOCK, &ctl, nullptr);

  fs.log = std::make_unique<EventLog>(!fs.opt.log.empty());
  FetcherConfig fc;
  fc.url = fs.opt.url;
  fc.proxy = fs.opt.proxy;
  fc.cache_dir = fs.opt.cache;
  fc.timeout_ms = static_cast<long>(fs.opt.timeout_s * 1000.0);
  fc.timeout_direct_ms = static_cast<long>(fs.opt.timeout_direct_s * 1000.0);
  fc.retries = fs.opt.retries;
  fc.parallel = fs.opt.parallel;
  fc.profile = fs.opt.profile;
  fs.copy_replies = !fs.opt.profile.splice_replies || !fs.opt.splice;
  try {
    fs.fetcher = std::make_unique<Fetcher>(fc, &fs.counters, fs.log.get());
  } catch (const std::exception& ex) {
    die(ex.what());
  }
  fs.xenv.counters = &fs.counters;
  fs.xenv.cfg = &fs.fetcher->config();
  fs.xenv.log = &fs.logbuf;
  fs.xenv.cleanups = &fs.cleanups;
  fs.xenv.host = fs.opt.url;
  fs.xenv.pid = ::getpid();
  fs.xenv.boot_s = static_cast<std::int64_t>(std::time(nullptr));
  {
    rlimit rl{};
    const std::int64_t nofile =
        ::getrlimit(RLIMIT_NOFILE, &rl) == 0 ? static_cast<std::int64_t>(rl.rlim_cur) : 1024;
    fs.xenv.max_fd = std::max<std::int64_t>(0, nofile - 512);  // cvmfs2's kNumReservedFd
  }
  {
    const std::string proxy = fs.opt.proxy.empty() ? "DIRECT" : fs.opt.proxy;
    fs.logbuf.add("(manager 'standard') switching proxy from (none) to " + proxy +
                  ". Reason: set random start proxy from the first proxy group [Current host: " +
                  fs.opt.url + "]");
    fs.logbuf.add("(manager 'external') switching proxy from (none) to " + proxy +
                  ". Reason: cloned [Current host: " + fs.opt.url + "]");
  }
  load_repository(&fs);
  fs.xenv.catalog = fs.catalog.get();
  if (fs.opt.prefetch_filebundles) {
    fs.bundles = std::make_unique<BundleMgr>(fs.catalog.get(), fs.fetcher.get(), &fs.counters,
                                             static_cast<std::size_t>(fs.opt.bundle_pool_size));
  }

  fuse_lowlevel_ops ops{};
  ops.init = op_init;
  ops.lookup = op_lookup;
  ops.getattr = op_getattr;
  ops.readlink = op_readlink;
  ops.opendir = op_opendir;
  ops.readdir = op_readdir;
  ops.releasedir = op_releasedir;
  ops.open = op_open;
  ops.read = op_read;
  ops.release = op_release;
  ops.getxattr = op_getxattr;
  ops.listxattr = op_listxattr;
  ops.statfs = op_statfs;

  std::vector<std::string> fargs = {"cmio-simfs", "-o",
                                    "ro,allow_other,fsname=cmio-simfs,subtype=cmio-simfs"};
  std::vector<char*> fargv;
  for (std::string& s : fargs) fargv.push_back(s.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(fargv.size()), fargv.data());
  fs.se = fuse_session_new(&args, &ops, sizeof ops, &fs);
  if (fs.se == nullptr) die("cannot create the FUSE session");
  if (fuse_set_signal_handlers(fs.se) != 0) die("cannot install signal handlers");
  if (fuse_session_mount(fs.se, fs.opt.mountpoint.c_str()) != 0) {
    die(fs.opt.mountpoint + ": mount failed");
  }
  std::thread ctl_thread(control_thread, &fs, ctl);
  if (fs.opt.ready_fd >= 0) {
    const char ok[] = "ready\n";
    if (::write(fs.opt.ready_fd, ok, sizeof ok - 1) < 0) { /* the parent went away: serve anyway */ }
    ::close(fs.opt.ready_fd);
  }

  fuse_loop_config* lc = fuse_loop_cfg_create();
  fuse_loop_cfg_set_max_threads(lc, static_cast<unsigned>(std::max(16, 2 * fs.opt.parallel)));
  fuse_loop_cfg_set_idle_threads(lc, 8);
  const int loop_rc = fuse_session_loop_mt(fs.se, lc);
  fuse_loop_cfg_destroy(lc);
  fuse_remove_signal_handlers(fs.se);
  fuse_session_unmount(fs.se);

  fs.stopping.store(true);
  pthread_kill(ctl_thread.native_handle(), SIGUSR2);
  ctl_thread.join();
  fs.bundles.reset();  // queued prefetches are dropped; one in flight finishes first

  // libfuse reports the signal that ended the loop: SIGINT/SIGTERM/SIGHUP are a clean stop.
  int rc = (loop_rc == 0 || loop_rc == SIGINT || loop_rc == SIGTERM || loop_rc == SIGHUP) ? 0 : 1;
  if (!fs.opt.log.empty()) {
    const std::string meta = log_meta(&fs, true);
    try {
      fs.log->write(fs.opt.log, meta);
    } catch (const std::exception& ex) {
      std::fprintf(stderr, "cmio-simfs: %s\n", ex.what());
      rc = 1;
    }
  }
  fuse_session_destroy(fs.se);
  fs.fetcher.reset();
  curl_global_cleanup();
  return rc;
}

}  // namespace
}  // namespace simfs

int main(int argc, char** argv) { return simfs::run(argc, argv); }
