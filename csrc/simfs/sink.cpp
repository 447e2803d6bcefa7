#include "sink.h"

#include <curl/curl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace simfs {

namespace {

bool write_all(int fd, const unsigned char* p, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

}  // namespace

// Without a bound on the body bytes, a stream that never ends and inflates to nothing
// (empty deflate blocks, 5 bytes each) kept a read busy forever at full speed: neither
// the size check (nothing is produced) nor the stall timeout (bytes keep coming) fires.
// A known decompressed size bounds the stored size: zlib's compressBound plus 1/8 and
// 64 KiB of slack for other deflate implementations' block overheads.
static std::int64_t derived_wire_limit(std::int64_t limit, bool compressed) {
  if (limit < 0) return -1;
  if (!compressed) return limit;
  return static_cast<std::int64_t>(compressBound(static_cast<uLong>(limit))) + limit / 8 + 65536;
}

Sink::Sink(int fd, std::int64_t limit, bool compressed, const ClientProfile& profile,
           std::int64_t wire_limit_in)
    : wire_limit(wire_limit_in >= 0 ? wire_limit_in : derived_wire_limit(limit, compressed)),
      fd_(fd),
      limit_(limit),
      inflating_(compressed),
      wrapped_(profile.zlib_wrapped),
      chunk_(std::max<std::size_t>(4096, profile.inflate_chunk)),
      md_(EVP_MD_CTX_new()),
      zout_(chunk_) {
  if (profile.write_block > 0) wbuf_.resize(profile.write_block);
  if (!md_ || EVP_DigestInit_ex(md_.get(), EVP_sha1(), nullptr) != 1) return;
  if (inflating_) {
    // cvmfs2: inflateInit (zlib wrapper: header and Adler-32 trailer checked by zlib);
    // fast: raw deflate, the wrapper checked by hand below.
    if (inflateInit2(&zs_, wrapped_ ? 15 : -15) != Z_OK) return;
    z_init_ = true;
  }
  init_ok_ = true;
}

Sink::~Sink() {
  if (z_init_) inflateEnd(&zs_);
}

bool Sink::write_out(const unsigned char* p, std::size_t n) {
  if (wbuf_.empty()) return write_all(fd_, p, n);
  // The transaction buffer: filled by memcpy, written out whenever it is full (one
  // write(2) per write_block bytes, as cvmfs2's PosixCacheManager::Write / Flush).
  while (n > 0) {
    if (wpos_ == wbuf_.size()) {
      if (!write_all(fd_, wbuf_.data(), wpos_)) return false;
      wpos_ = 0;
    }
    const std::size_t take = std::min(n, wbuf_.size() - wpos_);
    std::memcpy(wbuf_.data() + wpos_, p, take);
    wpos_ += take;
    p += take;
    n -= take;
  }
  return true;
}

bool Sink::flush() {
  if (wpos_ == 0) return true;
  const bool ok = write_all(fd_, wbuf_.data(), wpos_);
  wpos_ = 0;
  return ok;
}

bool Sink::emit(const unsigned char* p, std::size_t n) {
  out += static_cast<std::int64_t>(n);
  if (limit_ >= 0 && out > limit_) return false;
  return write_out(p, n);
}

bool Sink::consume(const unsigned char* p, std::size_t n) {
  if (EVP_DigestUpdate(md_.get(), p, n) != 1) return false;
  if (!inflating_) return emit(p, n);
  return wrapped_ ? consume_wrapped(p, n) : consume_raw(p, n);
}

bool Sink::consume_wrapped(const unsigned char* p, std::size_t n) {
  // DecompressZStream2Sink: input in pieces of chunk_ bytes, each inflated into a
  // chunk_-byte buffer until it no longer fills it; every full or partial buffer goes
  // to the transaction sink.
  std::size_t pos = 0;
  while (pos < n) {
    if (z_end_) return false;  // bytes after the end of the zlib stream
    const std::size_t piece = std::min(chunk_, n - pos);
    zs_.next_in = const_cast<unsigned char*>(p + pos);
    zs_.avail_in = static_cast<uInt>(piece);
    do {
      zs_.next_out = zout_.data();
      zs_.avail_out = static_cast<uInt>(zout_.size());
      const int rc = inflate(&zs_, Z_NO_FLUSH);
      if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) return false;
      const std::size_t produced = zout_.size() - zs_.avail_out;
      if (produced > 0 && !emit(zout_.data(), produced)) return false;
      if (rc == Z_STREAM_END) {
        z_end_ = true;
        if (zs_.avail_in != 0) return false;
        break;
      }
      if (rc == Z_BUF_ERROR && produced == 0 && zs_.avail_in != 0) return false;
    } while (zs_.avail_out == 0);
    pos += piece;
  }
  return true;
}

bool Sink::consume_raw(const unsigned char* p, std::size_t n) {
  while (header_got_ < 2 && n > 0) {
    header_[header_got_++] = *p++;
    --n;
    if (header_got_ == 2) {
      const unsigned cmf = header_[0], flg = header_[1];
      // deflate, window <= 32 KiB, no preset dictionary, valid check bits
      if ((cmf & 15) != 8 || (cmf >> 4) > 7 || (flg & 0x20) != 0 || (cmf * 256 + flg) % 31 != 0) {
        return false;
      }
    }
  }
  if (n == 0) return true;
  if (z_end_) {
    trailer_ += n;
    return trailer_ <= 4;
  }
  zs_.next_in = const_cast<unsigned char*>(p);
  zs_.avail_in = static_cast<uInt>(n);
  while (true) {
    zs_.next_out = zout_.data();
    zs_.avail_out = static_cast<uInt>(zout_.size());
    const int rc = inflate(&zs_, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) return false;
    const std::size_t produced = zout_.size() - zs_.avail_out;
    if (produced > 0 && !emit(zout_.data(), produced)) return false;
    if (rc == Z_STREAM_END) {
      z_end_ = true;
      trailer_ += zs_.avail_in;
      return trailer_ <= 4;
    }
    if (zs_.avail_in == 0 && zs_.avail_out != 0) return true;
    if (rc == Z_BUF_ERROR && produced == 0) return zs_.avail_in == 0;
  }
}

bool Sink::complete() const {
  if (!inflating_) return true;
  return wrapped_ ? z_end_ : (z_end_ && trailer_ == 4);
}

bool Sink::digest_is(const unsigned char* want) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int dlen = 0;
  return EVP_DigestFinal_ex(md_.get(), digest, &dlen) == 1 && dlen == 20 &&
         std::memcmp(digest, want, 20) == 0;
}

std::size_t sink_write_callback(char* data, std::size_t size, std::size_t nmemb, void* user) {
  auto* s = static_cast<Sink*>(user);
  const std::size_t n = size * nmemb;
  if (s->status == 0) curl_easy_getinfo(static_cast<CURL*>(s->curl), CURLINFO_RESPONSE_CODE, &s->status);
  if (s->status != 200) return 0;
  s->wire += static_cast<std::int64_t>(n);
  if (s->wire_limit >= 0 && s->wire > s->wire_limit) {
    s->failed = true;
    return 0;
  }
  if (!s->consume(reinterpret_cast<const unsigned char*>(data), n)) {
    s->failed = true;
    return 0;
  }
  return n;
}

}  // namespace simfs
