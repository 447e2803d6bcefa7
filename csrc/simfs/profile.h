// Client profiles: how the emulated client spends time per fetched object and byte.
//
// `cvmfs-2.12` reproduces what the real cvmfs2 2.12 client does on every object it
// downloads (docs/simfs.md, "Where the real client spends its time"): probing the cache
// with open(), a transaction file written in 4 KiB blocks, the transfer handed to one
// download I/O thread (curl multi, 1 ms poll while transfers run) and back over pipes,
// zlib-wrapped inflate in 16 KiB pieces with its Adler-32 check, a second open of the
// transaction file, rename into the cache, an LRU row per object in an SQLite database
// kept by a quota-manager thread, and replies copied out of the cache file (pread +
// fuse_reply_buf).  What measurement shows beyond that is a documented residual
// (`cost_per_object_ns`, `cost_per_mib_ns`), slept by the fetching thread.
//
// `fast` is the lean client of earlier releases of this project (large buffers, raw
// inflate, downloads in the calling thread, no bookkeeping, spliced replies): for
// warm-read benchmarks, where the per-object cost does not matter.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace simfs {

struct ClientProfile {
  std::string name;
  bool splice_replies = false;    // splice(2) from the cache file instead of pread + copy
  bool probe_with_open = true;    // a cache lookup is an open(2) (cvmfs2) instead of stat(2)
  bool download_thread = true;    // one curl-multi I/O thread; callers wait on pipes
  bool quota_db = true;           // SQLite LRU bookkeeping (cachedb) per object
  bool zlib_wrapped = true;       // inflateInit (Adler-32 checked) instead of raw inflate
  std::size_t inflate_chunk = 16384;  // zlib input and output piece (cvmfs2: kZChunk)
  std::size_t write_block = 4096;     // transaction buffer flushed per write(2); 0 = unbuffered
  long curl_buffer = 0;               // CURLOPT_BUFFERSIZE; 0 = libcurl's default (16 KiB)
  bool poll_1ms = true;               // the I/O thread polls every 1 ms while transfers run
  std::int64_t cost_per_object_ns = 0;  // calibrated residual per downloaded object
  std::int64_t cost_per_mib_ns = 0;     // calibrated residual per MiB of decompressed data
};

// The profile called `name` ("cvmfs-2.12" or "fast"); false if there is none.
bool client_profile(const std::string& name, ClientProfile* out);

// Names of all profiles, comma separated (for messages).
std::string client_profile_names();

}  // namespace simfs
