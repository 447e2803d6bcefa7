// A bounded text builder over a caller's buffer: no allocation, no stdio, so it
// can run in a forked child or at exit.  Output past the end is dropped.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace cmio::preload {

class JsonBuf {
 public:
  JsonBuf(char* buf, std::size_t cap) noexcept : buf_(buf), cap_(cap) {}
  std::size_t len() const noexcept { return len_; }

  void raw(const char* s) noexcept { bytes(s, std::strlen(s)); }
  void bytes(const char* s, std::size_t n) noexcept {
    for (std::size_t i = 0; i < n; ++i) put(s[i]);
  }
  void num(std::int64_t v) noexcept {
    char tmp[24];
    int k = 0;
    bool neg = v < 0;
    std::uint64_t u = neg ? 0 - static_cast<std::uint64_t>(v) : static_cast<std::uint64_t>(v);
    do {
      tmp[k++] = static_cast<char>('0' + u % 10);
      u /= 10;
    } while (u != 0);
    if (neg) put('-');
    while (k > 0) put(tmp[--k]);
  }
  void key(const char* k) noexcept {
    put(',');
    str(k, std::strlen(k));
    put(':');
  }
  // JSON string; bytes >= 0x80 pass through (the reader decodes with surrogateescape).
  void str(const char* s, std::size_t n) noexcept {
    static const char hex[] = "0123456789abcdef";
    put('"');
    for (std::size_t i = 0; i < n; ++i) {
      auto c = static_cast<unsigned char>(s[i]);
      if (c == '"' || c == '\\') {
        put('\\');
        put(static_cast<char>(c));
      } else if (c < 0x20 || c >= 0x80) {
        put('\\');
        put('u');
        put('0');
        put('0');
        put(hex[c >> 4]);
        put(hex[c & 15]);
      } else {
        put(static_cast<char>(c));
      }
    }
    put('"');
  }

 private:
  void put(char c) noexcept {
    if (len_ < cap_) buf_[len_++] = c;
  }
  char* buf_;
  std::size_t cap_;
  std::size_t len_ = 0;
};

}  // namespace cmio::preload
