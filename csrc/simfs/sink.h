// The receiving end of one object download: hashes the stored (compressed) bytes as they
// arrive and inflates them into the transaction file, as cvmfs2's curl data callback does
// (hash update, then DecompressZStream2Sink into a TransactionSink).  Any surprise (bad
// zlib stream, more bytes than the catalog says, a failed write) aborts the transfer.
#pragma once

#include <openssl/evp.h>
#include <zlib.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "profile.h"

namespace simfs {

class Sink {
 public:
  // `fd`: the open transaction file; `limit`: expected decompressed size or -1.
  // `wire_limit`: most body bytes accepted (-1: derived from `limit`, see sink.cpp).
  Sink(int fd, std::int64_t limit, bool compressed, const ClientProfile& profile,
       std::int64_t wire_limit = -1);
  ~Sink();
  Sink(const Sink&) = delete;
  Sink& operator=(const Sink&) = delete;

  bool ok_init() const { return init_ok_; }
  // Feeds `n` body bytes; false aborts the transfer.
  bool consume(const unsigned char* p, std::size_t n);
  // Writes what is still buffered (cvmfs2 flushes on OpenFromTxn); false on a write error.
  bool flush();
  // The zlib stream ended exactly (and its Adler-32 matched, when checked).
  bool complete() const;
  // SHA-1 of everything consumed equals `want` (20 bytes).
  bool digest_is(const unsigned char* want);

  const std::int64_t wire_limit;  // body bytes accepted at most (-1: unbounded)
  void* curl = nullptr;  // the transfer's easy handle (for the response code)
  long status = 0;       // HTTP status, read at the first body byte
  bool failed = false;   // consume() refused the body
  std::int64_t wire = 0; // body bytes received
  std::int64_t out = 0;  // decompressed bytes produced

 private:
  bool emit(const unsigned char* p, std::size_t n);
  bool write_out(const unsigned char* p, std::size_t n);
  bool consume_raw(const unsigned char* p, std::size_t n);
  bool consume_wrapped(const unsigned char* p, std::size_t n);

  struct MdDeleter {
    void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
  };

  int fd_;
  std::int64_t limit_;
  bool inflating_;
  bool wrapped_;
  std::size_t chunk_;
  std::unique_ptr<EVP_MD_CTX, MdDeleter> md_;
  z_stream zs_{};
  bool z_init_ = false;
  bool z_end_ = false;
  bool init_ok_ = false;
  std::vector<unsigned char> zout_;
  std::vector<unsigned char> wbuf_;  // transaction buffer (write_block bytes), empty if unbuffered
  std::size_t wpos_ = 0;
  // Raw inflate (fast profile): the two zlib header bytes and the Adler-32 trailer are
  // handled here; the SHA-1 of the stored bytes already proves them intact.
  std::array<unsigned char, 2> header_{};
  std::size_t header_got_ = 0;
  std::size_t trailer_ = 0;
};

// libcurl write callback for a Sink (CURLOPT_WRITEDATA = the Sink).
std::size_t sink_write_callback(char* data, std::size_t size, std::size_t nmemb, void* user);

}  // namespace simfs
