#include "profile.h"

namespace simfs {

namespace {

ClientProfile cvmfs_212() {
  ClientProfile p;
  p.name = "cvmfs-2.12";
  // Every field's default is the real client's behaviour (profile.h); the residual is
  // what the recorded side-by-side timings (testvectors/cvmfs-timing) still show beyond
  // it: per object, no per-byte term (docs/simfs.md, "Calibration").
  p.cost_per_object_ns = 2200000;
  p.cost_per_mib_ns = 0;
  return p;
}

ClientProfile fast() {
  ClientProfile p;
  p.name = "fast";
  p.splice_replies = true;
  p.probe_with_open = false;
  p.download_thread = false;
  p.quota_db = false;
  p.zlib_wrapped = false;
  p.inflate_chunk = 256 * 1024;
  p.write_block = 0;
  p.curl_buffer = 512L * 1024L;
  p.poll_1ms = false;
  return p;
}

}  // namespace

bool client_profile(const std::string& name, ClientProfile* out) {
  if (name == "cvmfs-2.12") {
    *out = cvmfs_212();
    return true;
  }
  if (name == "fast") {
    *out = fast();
    return true;
  }
  return false;
}

std::string client_profile_names() { return "cvmfs-2.12, fast"; }

}  // namespace simfs
