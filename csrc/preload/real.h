// The interposed libc functions, resolved with dlsym(RTLD_NEXT) on first use.
#pragma once

#include <dlfcn.h>

namespace cmio::preload {

// Resolves `name` once; the pointer is cached in `slot`.  dlsym takes no lock
// that any interposed call of ours could hold, so lazy resolution is safe.
template <class F>
inline F resolve(F& slot, const char* name) noexcept {
  F f = __atomic_load_n(&slot, __ATOMIC_ACQUIRE);
  if (f == nullptr) {
    f = reinterpret_cast<F>(dlsym(RTLD_NEXT, name));
    __atomic_store_n(&slot, f, __ATOMIC_RELEASE);
  }
  return f;
}

}  // namespace cmio::preload

// Declares `static T* real_NAME` and a function `r_NAME()` returning it.
#define CMIO_REAL(ret, name, ...)                                                  \
  using name##_fn = ret (*)(__VA_ARGS__);                                         \
  static name##_fn real_##name = nullptr;                                         \
  static inline name##_fn r_##name() noexcept {                                   \
    return ::cmio::preload::resolve(real_##name, #name);                          \
  }
