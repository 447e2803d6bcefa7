// The download manager of the cvmfs-2.12 profile: one I/O thread drives every transfer
// with libcurl's multi interface, as cvmfs2's DownloadManager::MainDownload does.  A
// caller hands a job over a pipe (a pointer, like cvmfs2's pipe_jobs_), the I/O thread
// starts it, polls (1 ms timeout while transfers run, as cvmfs2 does), runs the body
// callbacks (hash + inflate + transaction writes happen here, on the I/O thread), and
// wakes the caller through the caller's own pipe (cvmfs2's per-job result pipe).
#pragma once

#include <curl/curl.h>

#include <cstdint>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace simfs {

struct Transfer {
  std::string url;
  // Sets the request's options on the easy handle (URL, timeouts, proxy, write callback).
  std::function<void(CURL*)> configure;
  // Results, valid once perform() returns:
  CURLcode code = CURLE_OK;
  long status = 0;
  double total_time_s = 0;
};

class DownloadLoop {
 public:
  explicit DownloadLoop(bool poll_1ms);  // starts the I/O thread; throws std::runtime_error
  ~DownloadLoop();
  DownloadLoop(const DownloadLoop&) = delete;
  DownloadLoop& operator=(const DownloadLoop&) = delete;

  // Runs `t` on the I/O thread and waits for it (the caller sleeps on its pipe).
  void perform(Transfer* t);

 private:
  struct Job;
  void run();

  bool poll_1ms_;
  CURLM* multi_ = nullptr;
  int jobs_[2] = {-1, -1};
  std::vector<CURL*> idle_;  // I/O thread only
  std::thread io_;
};

}  // namespace simfs
